#!/usr/bin/env bash
# Data-parallel scaling on this machine, in one command:
#   bench/distributed.sh [tiny|small|qwen2.5-0.5b-shape] [measured steps]
# The same global batch (8 prompts × G = 4, 64-token completions at most, 16 completions per
# optimizer update, beta 0.04) trained by one process (two accumulated micro-batches of 8) and by
# two (`train --nproc 2`, one micro-batch of 8 each), every process on one thread
# (OMP_NUM_THREADS=1). Prints seconds per step, steps/s, the speed-up, and the seconds each
# step spent in collectives (gathering rollouts, summing gradients and statistics: rank 0's,
# waiting for the other rank included). The first step is a warm-up and is not counted.
set -euo pipefail
preset="${1:-small}"
steps="${2:-4}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash scripts/setup.sh >&2
cargo build --release -p crpo-host --bins >&2
host="$repo/target/release/crpo-host"
work="$repo/target/distributed-bench/$preset"
mkdir -p "$work"
[ -f "$work/model/config.json" ] || "$host" init-model --preset "$preset" --out "$work/model" >&2

config() { # name accumulation
  cat > "$work/$1.toml" <<TOML
[run]
output_dir = "$1"
max_steps = $((steps + 1))
save_steps = 0
sample_steps = 0
[model]
path = "model"
device = "cpu"
dtype = "f32"
[data]
path = "$repo/data/demo/train.jsonl"
[reward]
preset = "crpo"
[algorithm]
num_generations = 4
prompts_per_step = 8
per_device_train_batch_size = 8
gradient_accumulation_steps = $2
max_completion_length = 64
beta = 0.04
TOML
}
config one 2
config two 1
rm -rf "$work/one" "$work/two"
export OMP_NUM_THREADS=1 RUST_LOG=warn
"$host" train --config "$work/one.toml" >/dev/null
"$host" train --nproc 2 --config "$work/two.toml" >/dev/null
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
def measured(run):
    records = [json.loads(l) for l in open(f"{work}/{run}/metrics.jsonl")][1:]
    step = sum(r["step_time_s"] for r in records) / len(records)
    comm = sum(r.get("communication_s", 0.0) for r in records) / len(records)
    grads = sum(r.get("gradient_all_reduce_s", 0.0) for r in records) / len(records)
    return step, comm, grads, len(records)
one, _, _, n = measured("one")
two, comm, grads, _ = measured("two")
print(f"measured steps       {n} (after one warm-up)")
print(f"1 process            {one:8.3f} s/step  {1/one:6.3f} steps/s")
print(f"2 processes          {two:8.3f} s/step  {1/two:6.3f} steps/s  ({one/two:.2f}x)")
print(f"  in collectives     {comm:8.3f} s/step on rank 0 ({100*comm/two:.0f}% of the step, waits included)")
print(f"  summing gradients  {grads:8.3f} s/step")
PY
