"""TRL's GRPOTrainer on a crpo-made model directory, timed per step (the side-by-side's
Python half). CPU, fp32, fixed-length completions (min_new_tokens = max), beta > 0, one PPO
epoch. Prints one JSON line: {"seconds_per_step": [...], ...}.

Run by bench/side_by_side.sh; by hand:
  python bench/trl_grpo.py --model DIR --data prompts.jsonl --generations 4 --prompts 4 \
      --completion-length 64 --steps 3
"""
import argparse
import json
import time

import torch
import trl
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer


def ascii_share(completions, **kwargs):
    """The same cheap objective crpo uses in the comparison: share of printable-ASCII chars."""
    scores = []
    for completion in completions:
        text = completion if isinstance(completion, str) else completion[0]["content"]
        allowed = sum(1 for c in text if c == "\n" or " " <= c <= "~")
        scores.append(allowed / len(text) if text else 0.0)
    return scores


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times = []
        self.started = None

    def on_step_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.started)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--completion-length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument("--threads", type=int, default=0)
    # GRPOConfig turns gradient checkpointing on by default (recomputing the forward in the
    # backward); crpo does not checkpoint, so the equal-work comparison turns it off.
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--out", default="/tmp/trl-grpo-bench")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = [json.loads(line) for line in open(args.data)]
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": r["question"]}]} for r in rows])
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32)
    batch = args.generations * args.prompts
    config = GRPOConfig(
        output_dir=args.out,
        use_cpu=True,
        bf16=False,
        fp16=False,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        num_generations=args.generations,
        max_completion_length=args.completion_length,
        generation_kwargs={"min_new_tokens": args.completion_length},
        num_iterations=1,
        beta=args.beta,
        learning_rate=1e-6,
        temperature=1.0,
        max_steps=args.steps,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        dataloader_num_workers=0,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    timer = StepTimer()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[ascii_share],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[timer],
    )
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    print(json.dumps({
        "trainer": "trl",
        "trl_version": trl.__version__,
        "seconds_per_step": timer.times,
        # What shows the work was the same as crpo's: every completion at its fixed length,
        # and the reference model run (a KL is logged only when beta > 0).
        "completion_mean_length": [entry.get("completions/mean_length") for entry in logged],
        "kl": [entry.get("kl") for entry in logged],
        "threads": torch.get_num_threads(),
        "gradient_checkpointing": args.gradient_checkpointing,
        "completions_per_step": batch,
    }))


if __name__ == "__main__":
    main()
