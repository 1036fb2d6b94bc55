"""transformers' generate (with its KV cache) on a batch of prompts: tokens per second.
With --group G the batch is a GRPO rollout's: batch/G prompts, each G times in a row.
Prints one JSON line. Run by bench/side_by_side.sh."""
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--group", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32).eval()
    distinct = [json.loads(line) for line in open(args.data)][: args.batch // args.group]
    rows = [r for r in distinct for _ in range(args.group)]
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": r["question"]}], tokenize=False, add_generation_prompt=True)
        for r in rows
    ]
    inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    timings = []
    for _ in range(args.repeats + 1):
        started = time.perf_counter()
        with torch.no_grad():
            model.generate(**inputs, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                           max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, use_cache=True)
        timings.append(time.perf_counter() - started)
    best = min(timings[1:])
    print(json.dumps({"generator": "transformers", "batch": len(texts), "group": args.group, "new_tokens": args.new_tokens,
                      "seconds": best, "tokens_per_s": len(texts) * args.new_tokens / best}))


if __name__ == "__main__":
    main()
