"""PEFT's side of host/tests/lora.rs.

  peft_reference.py load BASE ADAPTER IDS_JSON OUT_JSON
      loads BASE with transformers and ADAPTER with peft.PeftModel.from_pretrained, writes the
      last-position logits of each id list.
  peft_reference.py plain MODEL - IDS_JSON OUT_JSON
      the same with transformers alone (a merged model).
  peft_reference.py make BASE OUT_ADAPTER IDS_JSON OUT_JSON [LORA_CONFIG_JSON]
      makes a LoRA adapter with peft (r 4, alpha 8, q_proj and down_proj, or the LoraConfig
      arguments given; B drawn at random so it changes the model), saves it with
      save_pretrained, writes its logits the same way.
"""
import json
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM


def logits(model, ids_path, out_path):
    rows = json.load(open(ids_path))
    model.eval()
    with torch.no_grad():
        result = [model(torch.tensor([ids])).logits[0, -1].tolist() for ids in rows]
    json.dump(result, open(out_path, "w"))


def main():
    mode, base = sys.argv[1], sys.argv[2]
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if mode == "load":
        model = PeftModel.from_pretrained(model, sys.argv[3])
    elif mode == "make":
        torch.manual_seed(0)
        settings = dict(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], lora_dropout=0.0)
        if len(sys.argv) > 6:
            settings.update(json.loads(sys.argv[6]))
        config = LoraConfig(**settings)
        model = get_peft_model(model, config)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0, 0.5)
        model.save_pretrained(sys.argv[3])
    logits(model, sys.argv[4], sys.argv[5])


if __name__ == "__main__":
    main()
