#!/usr/bin/env bash
# crpo's rollout engine against transformers' generate on a realistic rollout, in one command:
#   bench/rollout_side_by_side.sh [tiny|qwen2.5-0.5b-shape] [min_length] [max_length] [prompts] [group] [prompt_tokens]
# (defaults: tiny 16 1024 4 4 128). Same model directory (made by crpo-host init-model;
# transformers loads it), same prompt token ids (random, prompt_tokens each), each prompt G
# times in a row, and the same length per row, drawn log-uniformly between min_length and
# max_length and forced on both sides (crpo-host bench-rollout writes the rows and lengths to
# workload.json; bench/hf_generate.py --workload bans EOS before a row's length and forces it
# at it), so both do the same work: rows of a GRPO rollout that end at very different times.
# Sampling at temperature 1, no top-k/top-p, CPU, fp32, one warm-up then REPEATS (default 1)
# timed runs on each side. Prints tokens per second on each side, the speed-up, and crpo's
# decode steps with the share of rows × steps it ran (rows that ended leave the batch);
# writes target/rollout-side-by-side/<preset>/result.json.
set -euo pipefail
preset="${1:-tiny}"
min_length="${2:-16}"
max_length="${3:-1024}"
prompts="${4:-4}"
group="${5:-4}"
prompt_tokens="${6:-128}"
repeats="${REPEATS:-1}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
CRPO_WITH_TRANSFORMERS=1 bash scripts/setup.sh >&2
python="$(readlink -f .torch)/../../../../bin/python"
cargo build --release -p crpo-host --bins >&2
host="$repo/target/release/crpo-host"
work="$repo/target/rollout-side-by-side/$preset"
mkdir -p "$work"
[ -f "$work/model/config.json" ] || "$host" init-model --preset "$preset" --out "$work/model" >&2

echo "crpo rollout: $prompts prompts x $group samples, completions $min_length-$max_length tokens ($preset)" >&2
RUST_LOG=warn "$host" bench-rollout --model "$work/model" --device cpu --dtype f32 \
  --prompts "$prompts" --group "$group" --prompt-tokens "$prompt_tokens" \
  --min-length "$min_length" --max-length "$max_length" --repeats "$repeats" \
  --workload-out "$work/workload.json" >"$work/crpo.out"
head -n -1 "$work/crpo.out" >&2
crpo_json="$(tail -1 "$work/crpo.out")"
echo "transformers generate: the same rows and lengths" >&2
hf_json="$("$python" "$repo/bench/hf_generate.py" --model "$work/model" --workload "$work/workload.json" \
  --repeats "$repeats" 2>"$work/hf.log" | tail -1)" || { cat "$work/hf.log" >&2; exit 1; }

"$python" - "$preset" "$crpo_json" "$hf_json" "$work/result.json" <<'PY'
import json, platform, sys
preset, crpo, hf = sys.argv[1], *map(json.loads, sys.argv[2:4])
if crpo["generated_tokens"] != hf["tokens"] or crpo["rows"] != hf["rows"]:
    sys.exit(f"error: the two sides did different work: crpo {crpo['rows']} rows, {crpo['generated_tokens']} tokens; "
             f"transformers {hf['rows']} rows, {hf['tokens']} tokens")
share = crpo["row_steps"] / max(crpo["rows_if_none_left"], 1)
result = {"preset": preset, "rows": crpo["rows"], "tokens": crpo["generated_tokens"],
          "crpo_tokens_per_s": crpo["tokens_per_s"], "transformers_tokens_per_s": hf["tokens_per_s"],
          "speedup": crpo["tokens_per_s"] / hf["tokens_per_s"], "crpo_decode_steps": crpo["decode_steps"],
          "crpo_row_steps": crpo["row_steps"], "rows_times_steps": crpo["rows_if_none_left"], "row_step_share": share,
          "machine": platform.processor() or platform.machine(), "raw": {"crpo": crpo, "transformers": hf}}
print(f"{'preset':<20} {'rows':>5} {'tokens':>7} {'crpo tok/s':>11} {'HF tok/s':>9} {'speed-up':>9} {'crpo steps':>11} {'row-steps / rows×steps':>24}")
print(f"{preset:<20} {result['rows']:>5} {result['tokens']:>7} {crpo['tokens_per_s']:>11.1f} {hf['tokens_per_s']:>9.1f} "
      f"{result['speedup']:>8.2f}x {crpo['decode_steps']:>11} {crpo['row_steps']:>10} / {crpo['rows_if_none_left']:<6} ({100 * share:.0f}%)")
json.dump(result, open(sys.argv[4], "w"), indent=2)
PY
