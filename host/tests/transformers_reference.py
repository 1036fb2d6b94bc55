"""Makes a tiny random Qwen2 (or Llama with Llama 3.1's rotary scaling) with transformers, saves
it, and records its logits and greedy output for tests/transformers_parity.rs. `window`: a Qwen2
whose every layer has a sliding window as long as its positions.
Usage: python transformers_reference.py OUT_DIR tie|separate|llama3|window"""
import json
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

out, kind = sys.argv[1], sys.argv[2]
tie = kind == "tie"
torch.manual_seed(0)
shape = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
)
# Llama 3.1's scaling over a short original context, so the head's frequencies fall in all
# three of its regimes (kept, divided, blended).
llama3 = dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
              high_freq_factor=4.0, original_max_position_embeddings=64)
if kind == "llama3":
    model = LlamaForCausalLM(LlamaConfig(**shape, rope_parameters=llama3, tie_word_embeddings=False)).eval()
elif kind == "window":
    window = dict(use_sliding_window=True, sliding_window=shape["max_position_embeddings"], max_window_layers=0)
    model = Qwen2ForCausalLM(Qwen2Config(**shape, **window, rope_theta=10000.0)).eval()
else:
    model = Qwen2ForCausalLM(Qwen2Config(**shape, rope_theta=10000.0, tie_word_embeddings=tie)).eval()
# Random init gives tiny logits; scale weights up so greedy decoding is not decided by noise.
with torch.no_grad():
    for name, param in model.named_parameters():
        if "norm" not in name:
            param.mul_(8.0)
model.save_pretrained(out, safe_serialization=True)

prompt = torch.tensor([[3, 17, 5, 42, 8, 11, 29] * (6 if kind == "llama3" else 1)])
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
