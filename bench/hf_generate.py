"""transformers' generate (with its KV cache) on a batch of prompts: tokens per second.
Prints one JSON line.

--data: the prompts of a jsonl file (chat template), fixed-length completions; with --group G
  the batch is a GRPO rollout's: batch/G prompts, each G times in a row. Run by
  bench/side_by_side.sh.
--workload: the rows of `crpo-host bench-rollout --workload-out` (prompt token ids, each row's
  completion length): each row is forced to end with an EOS at exactly its length, so
  transformers does the same work as crpo's rollout and stops each row as it really would.
  Run by bench/rollout_side_by_side.sh."""
import argparse
import json
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor


class ForcedLengths(LogitsProcessor):
    """Row r ends with exactly budgets[r] new tokens, the last one EOS: EOS is banned before
    that position and is the only choice at it. Rows past their end are left alone
    (transformers pads them)."""

    def __init__(self, budgets, eos_ids, prompt_width):
        self.budgets = torch.tensor(budgets)
        self.eos_ids = list(eos_ids)
        self.prompt_width = prompt_width

    def __call__(self, input_ids, scores):
        t = input_ids.shape[1] - self.prompt_width
        budgets = self.budgets.to(scores.device)
        before = t < budgets - 1
        scores[before.nonzero(as_tuple=True)[0][:, None], torch.tensor(self.eos_ids, device=scores.device)] = -float("inf")
        at = (t == budgets - 1).nonzero(as_tuple=True)[0]
        if len(at):
            scores[at] = -float("inf")
            scores[at, self.eos_ids[0]] = 0.0
        return scores


def timed(generate, repeats):
    """One warm-up, then `repeats` timed runs: the best time and the last output."""
    timings, output = [], None
    for _ in range(repeats + 1):
        started = time.perf_counter()
        with torch.no_grad():
            output = generate()
        timings.append(time.perf_counter() - started)
    return min(timings[1:]), output


def run_data(args, tokenizer, model):
    distinct = [json.loads(line) for line in open(args.data)][: args.batch // args.group]
    rows = [r for r in distinct for _ in range(args.group)]
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": r["question"]}], tokenize=False, add_generation_prompt=True)
        for r in rows
    ]
    inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    best, _ = timed(lambda: model.generate(**inputs, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                           max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                           use_cache=True), args.repeats)
    print(json.dumps({"generator": "transformers", "transformers_version": transformers.__version__, "batch": len(texts), "group": args.group, "new_tokens": args.new_tokens,
                      "seconds": best, "tokens_per_s": len(texts) * args.new_tokens / best}))


def run_workload(args, tokenizer, model):
    workload = json.load(open(args.workload))
    prompts, budgets = workload["prompts"], workload["budgets"]
    eos = model.config.eos_token_id
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
    if not eos_ids:
        sys.exit("error: the model config has no eos_token_id")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    best, output = timed(lambda: model.generate(
        input_ids=input_ids, attention_mask=attention_mask, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
        max_new_tokens=max(budgets), use_cache=True, eos_token_id=eos_ids, pad_token_id=pad,
        logits_processor=[ForcedLengths(budgets, eos_ids, width)]), args.repeats)
    # Each row's tokens up to and including its first EOS (what follows is transformers' padding).
    counts = []
    for row in output[:, width:].tolist():
        ends = [i for i, token in enumerate(row) if token in eos_ids]
        counts.append(ends[0] + 1 if ends else len(row))
    if counts != budgets:
        wrong = [(r, c, b) for r, (c, b) in enumerate(zip(counts, budgets)) if c != b]
        sys.exit(f"error: transformers generated {sum(counts)} tokens, the workload asks {sum(budgets)}; "
                 f"rows (row, generated, budget) off: {wrong[:8]}")
    tokens = sum(counts)
    print(json.dumps({"generator": "transformers", "transformers_version": transformers.__version__, "rows": len(prompts), "tokens": tokens, "seconds": best,
                      "tokens_per_s": tokens / best, "max_new_tokens": max(budgets)}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="jsonl prompts (fixed-length completions)")
    source.add_argument("--workload", help="JSON from crpo-host bench-rollout --workload-out")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--group", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    if args.workload:
        run_workload(args, tokenizer, model)
    else:
        run_data(args, tokenizer, model)


if __name__ == "__main__":
    main()
