#!/usr/bin/env bash
# The GPU check (one run on a machine with a GPU, in a few minutes; nothing is built there):
#   1. doctor: versions, libtorch, CUDA devices;
#   2. numerics: a model on CUDA in bf16 against the CPU in f32 (logits within bf16's
#      tolerance, greedy continuations equal, CUDA's decoded through CUDA graphs) — the demo's
#      cold start when --check-model names it, else a fresh tiny model;
#   3. the rollout engine on the Qwen2.5-0.5B shape (random weights): 64 rows, completions of
#      16–1024 tokens drawn per row, tokens/s and decode steps against the HBM bound, with
#      decode steps replayed as CUDA graphs and again without (CRPO_CUDA_GRAPHS=0), and in f32
#      how many of 16 sampled completions graphed steps reproduce exactly;
#   4. CRPO steps of the 0.5B shape in bf16 (8 prompts × 8, 512-token completions): s/step,
#      rollout and training tokens/s, training MFU against the bf16 peak, peak GPU memory;
#   5. CRPO steps of the Qwen2.5-3B shape (full fine-tuning, AdamW): time and peak memory;
#   6. the distributed path with world size 1 (NCCL on CUDA, Gloo on CPU: RANK=0 WORLD_SIZE=1, as
#      torchrun sets them), two steps of a small model, and the seconds in collectives.
# Every figure is printed and kept in OUT/gpu_check.jsonl.
#
#   bench/gpu_check.sh [--device cuda|cpu] [--bin DIR] [--out DIR] [--check-model DIR]
#
# --device cpu is the dry run CI does: the same steps on the tiny preset, small sizes, f32.
# The binaries come from --bin (default target/release); CRPO_LIBTORCH_DIR points them at the
# machine's torch 2.11.0 when it is not where they were built (set from python3's torch here
# when unset and the built one is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda
bin=target/release
out=${OUT:-/tmp/crpo-gpu-check}
check_model=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --check-model) check_model=$2; shift 2 ;;
    *) echo "gpu_check: unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
crpo="$bin/crpo-host"
results="$out/gpu_check.jsonl"
: > "$results"
export RUST_LOG=${RUST_LOG:-warn}

if ! "$crpo" --version >/dev/null 2>&1 && [ -z "${CRPO_LIBTORCH_DIR:-}" ]; then
  CRPO_LIBTORCH_DIR=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
  export CRPO_LIBTORCH_DIR
  echo "gpu_check: libtorch from $CRPO_LIBTORCH_DIR"
fi

if [ "$device" = cpu ]; then
  dtype=f32; rollout_model=tiny; train_model=tiny; big_model=""
  rollout_args=(--prompts 2 --group 2 --prompt-tokens 16 --min-length 4 --max-length 32)
  train_shape=(2 2 16) # prompts, generations, completion tokens
  peak_tflops=0; hbm_gbps=""
else
  dtype=bf16; rollout_model=qwen2.5-0.5b-shape; train_model=qwen2.5-0.5b-shape; big_model=qwen2.5-3b-shape
  rollout_args=(--prompts 8 --group 8 --prompt-tokens 128 --min-length 16 --max-length 1024)
  train_shape=(8 8 512)
  # H100/H200 SXM dense bf16 peak (datasheet; ~790 TFLOP/s was measured on this H200).
  peak_tflops=989; hbm_gbps=4800
fi

# Peak GPU memory of a phase: nvidia-smi sampled in the background (the process's memory as
# the driver sees it: the allocator's reserve plus the CUDA context); metrics.jsonl carries
# the allocator's own peaks.
watch_memory() {
  if command -v nvidia-smi >/dev/null && [ "$device" != cpu ]; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$out/memory-$1.log" &
    echo $! > "$out/memory.pid"
  fi
}
peak_memory() {
  if [ -f "$out/memory.pid" ]; then
    kill "$(cat "$out/memory.pid")" 2>/dev/null || true
    rm -f "$out/memory.pid"
    sort -n "$out/memory-$1.log" | tail -1
  else
    echo 0
  fi
}

echo "== 1. doctor"
"$crpo" doctor

echo "== 2. numerics: $device $dtype against the CPU in f32"
if [ -z "$check_model" ]; then
  check_model="$out/models/check-tiny"
  [ -f "$check_model/config.json" ] || "$crpo" init-model --preset tiny --out "$check_model" --seed 1 >/dev/null
fi
"$crpo" doctor --check-model "$check_model" --device "$device" --dtype "$dtype" | sed -n '/^check /,$p'

echo "== 3. rollout engine: $rollout_model, completions of varied lengths"
model_dir() {
  local dir="$out/models/$1"
  [ -f "$dir/config.json" ] || "$crpo" init-model --preset "$1" --out "$dir" >/dev/null
  echo "$dir"
}
watch_memory rollout
"$crpo" bench-rollout --model "$(model_dir "$rollout_model")" --device "$device" --dtype "$dtype" \
  "${rollout_args[@]}" ${hbm_gbps:+--memory-gbps $hbm_gbps} | tee "$out/rollout.log"
echo "peak GPU memory (MiB): $(peak_memory rollout)"
tail -1 "$out/rollout.log" >> "$results"
if [ "$device" != cpu ]; then
  echo "== 3b. the same rollout with its decode steps launched kernel by kernel (CRPO_CUDA_GRAPHS=0)"
  CRPO_CUDA_GRAPHS=0 "$crpo" bench-rollout --model "$(model_dir "$rollout_model")" --device "$device" --dtype "$dtype" \
    "${rollout_args[@]}" ${hbm_gbps:+--memory-gbps $hbm_gbps} | tee "$out/rollout-eager.log"
  tail -1 "$out/rollout-eager.log" >> "$results"
fi
echo "== 3c. graphed decode steps against eager ones, in f32 (rows leaving, the window growing)"
"$crpo" bench-rollout --model "$(model_dir "$rollout_model")" --device "$device" --dtype f32 \
  --prompts 4 --group 4 --prompt-tokens 64 --min-length 8 --max-length 600 --compare-eager | tee "$out/rollout-compare.log"
tail -1 "$out/rollout-compare.log" >> "$results"

# CRPO steps of a preset: prompts, generations, completion tokens, steps, and "distributed" to
# run it as rank 0 of a world of 1.
train() {
  local preset=$1 prompts=$2 generations=$3 length=$4 steps=$5 distributed=${6:-}
  local dir; dir=$(model_dir "$preset")
  local run="$out/run-$preset"
  rm -rf "$run"
  cat > "$out/$preset.toml" <<TOML
[run]
output_dir = "$run"
max_steps = $steps
save_steps = 0
sample_steps = 0
[model]
path = "$dir"
device = "$device"
dtype = "$dtype"
[data]
path = "$PWD/data/demo/train.jsonl"
eval_fraction = 0.0
[[reward.objectives]]
plugin = "consistency"
[algorithm]
num_generations = $generations
prompts_per_step = $prompts
mini_batch_size = 16
gradient_accumulation_steps = 4
learning_rate = 1e-6
beta = 0.04
max_completion_length = $length
min_completion_length = $length
TOML
  watch_memory "$preset"
  if [ -n "$distributed" ]; then
    local port; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      "$crpo" train --config "$out/$preset.toml" >/dev/null
  else
    "$crpo" train --config "$out/$preset.toml" >/dev/null
  fi
  local memory; memory=$(peak_memory "$preset")
  python3 - "$run/metrics.jsonl" "$dir/config.json" "$preset" "$memory" "$peak_tflops" <<'PY' | tee -a "$results"
import json, sys
metrics = [json.loads(l) for l in open(sys.argv[1])]
config = json.load(open(sys.argv[2]))
h, i, layers, v = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"], config["vocab_size"]
kv = config["num_key_value_heads"] * h // config["num_attention_heads"]
params = v * h + layers * (2 * h * h + 2 * h * kv + 3 * h * i)
measured = metrics[1:] or metrics  # the first step warms up
mean = lambda key: sum(m[key] for m in measured) / len(measured)
train_tps = mean("train_tokens_per_s")
# Forward and backward of the policy pass: 6 FLOPs per parameter per token.
peak = float(sys.argv[5])
record = {
    "preset": sys.argv[3], "parameters": params, "steps_measured": len(measured),
    "step_seconds": mean("step_time_s"), "rollout_tokens_per_s": mean("rollout_tokens_per_s"),
    "train_tokens_per_s": train_tps, "kv_cache_bytes": measured[-1].get("kv_cache_bytes"),
    "training_tflops": 6 * params * train_tps / 1e12,
    "training_mfu": (6 * params * train_tps / (peak * 1e12)) if peak > 0 else None,
    "peak_gpu_memory_mib": int(sys.argv[4]),
    # The allocator's own peaks (metrics.jsonl, per step), beside the driver's view above.
    "peak_allocated_gib": max((m.get("gpu_memory") or {}).get("peak_allocated_bytes", 0) for m in metrics) / 2**30,
    "peak_reserved_gib": max((m.get("gpu_memory") or {}).get("peak_reserved_bytes", 0) for m in metrics) / 2**30,
    "peak_rss_gib": max(m.get("peak_rss_bytes", 0) for m in metrics) / 2**30,
}
if "communication_s" in measured[-1]:
    record["distributed_world_size_1"] = True
    record["communication_s"] = mean("communication_s")
    record["gradient_all_reduce_s"] = mean("gradient_all_reduce_s")
print(json.dumps(record))
PY
}

echo "== 4. CRPO steps: $train_model in $dtype"
train "$train_model" "${train_shape[@]}" 3
if [ -n "$big_model" ]; then
  echo "== 5. CRPO steps: $big_model in $dtype (full fine-tuning)"
  train "$big_model" 4 8 256 2
fi
echo "== 6. the distributed path, world size 1: $rollout_model"
train "$rollout_model" 2 4 64 2 distributed
echo "results: $results"
