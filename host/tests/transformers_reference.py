"""Makes a tiny random Qwen2 with transformers, saves it, and records its logits and greedy
output for tests/transformers_parity.rs. Usage: python transformers_reference.py OUT_DIR TIE"""
import json
import sys

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

out, tie = sys.argv[1], sys.argv[2] == "tie"
torch.manual_seed(0)
config = Qwen2Config(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rope_theta=10000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=tie,
)
model = Qwen2ForCausalLM(config).eval()
# Random init gives tiny logits; scale weights up so greedy decoding is not decided by noise.
with torch.no_grad():
    for name, param in model.named_parameters():
        if "norm" not in name:
            param.mul_(8.0)
model.save_pretrained(out, safe_serialization=True)

prompt = torch.tensor([[3, 17, 5, 42, 8, 11, 29]])
with torch.no_grad():
    logits = model(prompt).logits[0]
    generated = model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False,
        eos_token_id=None, pad_token_id=0,
    )
json.dump(
    {"prompt": prompt[0].tolist(), "logits": logits.tolist(), "greedy": generated[0, prompt.shape[1]:].tolist()},
    open(f"{out}/expected.json", "w"),
)
