#!/usr/bin/env bash
# The side-by-side with the Python stack, in one command:
#   bench/side_by_side.sh [tiny|small|qwen2.5-0.5b-shape] [measured steps]
# Same model directory (made by crpo-host init-model; transformers loads it), same prompts,
# G = 4, 4 prompts per step (16 completions), fixed-length completions of 64 tokens, beta 0.04,
# one PPO epoch, CPU, fp32 — TRL's GRPOTrainer, then crpo's trainer; then transformers'
# generate against crpo's rollout on a batch of the same shape (4 prompts, each 4 times).
# Prints seconds per step and the ratios,
# and writes target/side-by-side/<preset>/result.json. The first step of each is a warm-up
# and is not counted. TRL runs without gradient checkpointing (GRPOConfig's default is on),
# so both sides do the same work; TRL_ARGS=--gradient-checkpointing measures TRL's default.
set -euo pipefail
preset="${1:-tiny}"
steps="${2:-3}"
generations=4
prompts=4
length=64
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
CRPO_WITH_TRANSFORMERS=1 CRPO_WITH_TRL=1 bash scripts/setup.sh >&2
python="$(readlink -f .torch)/../../../../bin/python"
cargo build --release -p crpo-host --bins >&2
host="$repo/target/release/crpo-host"
work="$repo/target/side-by-side/$preset"
mkdir -p "$work"
[ -f "$work/model/config.json" ] || "$host" init-model --preset "$preset" --out "$work/model" >&2

# ~100-token prompts: a demo vignette with its options, as one user message.
"$python" - "$repo/data/demo/train.jsonl" "$work/prompts.jsonl" <<'PY'
import json, sys
with open(sys.argv[2], "w") as out:
    for line in open(sys.argv[1]):
        r = json.loads(line)
        options = "\n".join(f"{k}. {v}" for k, v in sorted(r["options"].items()))
        r["question"] = f"{r['question']}\n\n{options}\nAnswer with the letter of the best option."
        out.write(json.dumps(r) + "\n")
PY

cat > "$work/crpo.toml" <<TOML
[run]
output_dir = "run"
max_steps = $((steps + 1))
save_steps = 1000
sample_steps = 0
[model]
path = "model"
device = "cpu"
dtype = "f32"
[data]
path = "prompts.jsonl"
eval_fraction = 0.0
prompt_template = "{question}"
[[reward.objectives]]
plugin = "consistency"
[algorithm]
num_generations = $generations
prompts_per_step = $prompts
mini_batch_size = $((generations * prompts))
gradient_accumulation_steps = 1
num_iterations = 1
learning_rate = 1e-6
beta = 0.04
temperature = 1.0
max_completion_length = $length
min_completion_length = $length
loss_type = "dapo"
TOML
rm -rf "$work/run"
echo "crpo: $((steps + 1)) steps ($preset)" >&2
RUST_LOG=warn "$host" train --config "$work/crpo.toml" >&2
crpo_json="$("$python" - "$work/run/metrics.jsonl" <<'PY'
import json, sys
records = [json.loads(l) for l in open(sys.argv[1])][1:]
print(json.dumps({"seconds_per_step": [r["step_time_s"] for r in records],
                  "rollout_tokens_per_s": [r["rollout_tokens_per_s"] for r in records]}))
PY
)"
echo "TRL: $((steps + 1)) steps ($preset)" >&2
trl_json="$("$python" "$repo/bench/trl_grpo.py" --model "$work/model" --data "$work/prompts.jsonl" \
  --generations $generations --prompts $prompts --completion-length $length --steps $((steps + 1)) \
  --out "$work/trl" ${TRL_ARGS:-} 2>"$work/trl.log" | tail -1)"
echo "transformers generate: $prompts prompts x $generations samples x $length tokens" >&2
hf_json="$("$python" "$repo/bench/hf_generate.py" --model "$work/model" --data "$work/prompts.jsonl" \
  --batch $((generations * prompts)) --group $generations --new-tokens $length 2>>"$work/trl.log" | tail -1)"

"$python" - "$preset" "$crpo_json" "$trl_json" "$hf_json" "$work/result.json" <<'PY'
import json, platform, statistics, sys
preset, crpo, trl, hf = sys.argv[1], *map(json.loads, sys.argv[2:5])
ours = statistics.median(crpo["seconds_per_step"])
theirs = statistics.median(trl["seconds_per_step"][1:])
our_gen = statistics.median(crpo["rollout_tokens_per_s"])
result = {"preset": preset, "crpo_seconds_per_step": ours, "trl_seconds_per_step": theirs,
          "step_speedup": theirs / ours, "crpo_rollout_tokens_per_s": our_gen,
          "transformers_generate_tokens_per_s": hf["tokens_per_s"],
          "generation_speedup": our_gen / hf["tokens_per_s"], "machine": platform.processor() or platform.machine(),
          "raw": {"crpo": crpo, "trl": trl, "transformers": hf}}
print(f"{'preset':<20} {'crpo s/step':>12} {'TRL s/step':>11} {'speed-up':>9} {'crpo gen tok/s':>15} {'HF gen tok/s':>13} {'speed-up':>9}")
print(f"{preset:<20} {ours:>12.2f} {theirs:>11.2f} {theirs/ours:>8.2f}x {our_gen:>15.1f} {hf['tokens_per_s']:>13.1f} {our_gen/hf['tokens_per_s']:>8.2f}x")
json.dump(result, open(sys.argv[5], "w"), indent=2)
PY
