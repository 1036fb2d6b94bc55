//! `crpo-host bench-rollout`: the rollout engine's speed on realistic completions — G samples
//! of each prompt, each row stopping at its own length drawn from a wide range (forced per
//! row, so another engine given the same lengths does the same work) — with the figures to
//! judge it by: tokens/s, time per decode step, and the bounds of the work done (arithmetic;
//! on a GPU, the weights read per decode step against the memory bandwidth).

use crate::device::{parse_device, parse_dtype};
use crate::plugins::PluginRegistry;
use crate::rollout::generation::{Completion, DecodeSteps};
use crate::rollout::sampling::SamplingConfig;
use crate::rollout::Policy;
use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct BenchRolloutArgs {
    /// The model directory.
    #[arg(long, value_parser = crate::home_path::path_argument)]
    pub model: PathBuf,
    /// The policy plugin that loads --model.
    #[arg(long, default_value = "qwen2")]
    pub policy: String,
    /// auto | cpu | cuda | cuda:N
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// auto (bf16 on CUDA, f32 on CPU) | f32 | bf16
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Distinct prompts.
    #[arg(long, default_value_t = 8)]
    pub prompts: usize,
    /// Samples of each prompt (rows = prompts × group).
    #[arg(long, default_value_t = 8)]
    pub group: usize,
    /// Tokens of each prompt.
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Shortest completion.
    #[arg(long, default_value_t = 16)]
    pub min_length: usize,
    /// Longest completion; each row's length is drawn log-uniformly between the two.
    #[arg(long, default_value_t = 1024)]
    pub max_length: usize,
    /// Timed repetitions after one warm-up.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// Seeds the prompts, the lengths and the sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The device's memory bandwidth in GB/s, for the bound of reading the weights once per
    /// decode step (H200: 4800).
    #[arg(long)]
    pub memory_gbps: Option<f64>,
    /// Writes the workload — `{"prompts": [[ids] per row], "budgets": [per row], "group",
    /// "seed"}` — to this JSON file, for another engine to run the same rows to the same
    /// lengths (bench/hf_generate.py --workload).
    #[arg(long, value_parser = crate::home_path::path_argument)]
    pub workload_out: Option<PathBuf>,
    /// Decodes the rows once more with eager steps (no CUDA graphs, no fixed shapes: what
    /// CRPO_CUDA_GRAPHS=0 runs) and reports how many completions are identical to the timed
    /// run's: a check of the graphed path on a GPU (in f32 all but a rare near-tie should be;
    /// in bf16 the order of sums differs, and sampled rows part after a while).
    #[arg(long)]
    pub compare_eager: bool,
}

/// The most rows a benchmark's rollout batch may have.
const MAX_BENCH_ROWS: usize = 4096;

pub fn run(registry: &PluginRegistry, args: &BenchRolloutArgs) -> anyhow::Result<()> {
    for (flag, value) in [
        ("--prompts", args.prompts),
        ("--group", args.group),
        ("--prompt-tokens", args.prompt_tokens),
        ("--repeats", args.repeats),
    ] {
        if value == 0 {
            bail!("{flag} must be at least 1");
        }
    }
    // A rollout batch beyond any GPU's (and far beyond this machine's memory).
    if args
        .prompts
        .checked_mul(args.group)
        .is_none_or(|rows| rows > MAX_BENCH_ROWS)
    {
        bail!(
            "--prompts × --group = {} × {} rows, more than the {MAX_BENCH_ROWS} one rollout batch may hold",
            args.prompts,
            args.group
        );
    }
    if args.min_length == 0 || args.min_length > args.max_length {
        bail!(
            "--min-length ({}) must be at least 1 and at most --max-length ({})",
            args.min_length,
            args.max_length
        );
    }
    if let Some(gbps) = args.memory_gbps.filter(|gbps| !gbps.is_finite() || *gbps <= 0.0) {
        bail!("--memory-gbps must be a number > 0 (the machine's memory bandwidth in GB/s); it is {gbps}");
    }
    if let Some(path) = &args.workload_out {
        check_workload_out(path, &args.model)?;
    }
    let device = parse_device(&args.device)?;
    let kind = parse_dtype(&args.dtype, device)?;
    let policy = Policy::load_with(
        registry,
        &args.policy,
        &args.model,
        device,
        kind,
        &serde_json::Value::Null,
    )?;
    policy.check_positions(
        ("--prompt-tokens", args.prompt_tokens),
        ("--max-length", args.max_length),
    )?;
    let vocab = policy.tokenizer.vocab_size() as i64;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let prompts: Vec<Vec<i64>> = (0..args.prompts)
        .flat_map(|_| {
            let prompt: Vec<i64> = (0..args.prompt_tokens)
                .map(|_| rng.random_range(3..vocab))
                .collect();
            std::iter::repeat_n(prompt, args.group)
        })
        .collect();
    let (low, high) = ((args.min_length as f64).ln(), (args.max_length as f64).ln());
    let budgets: Vec<usize> = (0..prompts.len())
        .map(|_| (low + rng.random::<f64>() * (high - low)).exp().round() as usize)
        .map(|b| b.clamp(args.min_length, args.max_length))
        .collect();
    if let Some(path) = &args.workload_out {
        let workload =
            json!({"prompts": prompts, "budgets": budgets, "group": args.group, "seed": args.seed});
        write_workload(path, &workload)
            .with_context(|| format!("cannot write the workload to {}", path.display()))?;
    }
    let sampling = SamplingConfig {
        max_new_tokens: args.max_length,
        min_new_tokens: args.max_length,
        temperature: 1.0,
        seed: args.seed,
        row_budgets: budgets.clone(),
        ..SamplingConfig::default()
    };
    let parameters: usize = policy.parameters().iter().map(|(_, p)| p.numel()).sum();
    let weight_bytes: usize = policy
        .parameters()
        .iter()
        .map(|(_, p)| p.numel() * p.kind().elt_size_in_bytes())
        .sum();
    // Counted first: a frozen policy lists no trainable parameters.
    let policy = policy.for_inference();
    let mut timings = Vec::new();
    let mut stats = None;
    let mut last = Vec::new();
    crate::memory_stats::reset_peak(device);
    for repeat in 0..=args.repeats {
        synchronize(device);
        let started = Instant::now();
        let (completions, run_stats) = policy.generate(&prompts, &sampling)?;
        synchronize(device);
        let seconds = started.elapsed().as_secs_f64();
        let generated: usize = completions.iter().map(|c| c.ids.len()).sum();
        if generated != budgets.iter().sum::<usize>() {
            bail!("rows did not run to their lengths ({generated} tokens)");
        }
        if repeat > 0 {
            timings.push(seconds);
        }
        stats = Some(run_stats);
        last = completions;
    }
    let stats = stats.unwrap_or_default();
    timings.sort_by(f64::total_cmp);
    let seconds = timings[timings.len() / 2];
    let generated: usize = budgets.iter().sum();
    // Arithmetic: 2 FLOPs per parameter per token (prefill once per distinct prompt, decode
    // per live row per step); attention over the cache is left out (small at these lengths).
    let prefill_tokens = args.prompts * args.prompt_tokens;
    // The whole rollout's time over its decode steps: the prefill is spread over them. None
    // without a decode step (every row ended at its first token: the time is the prefill's).
    let ms_per_decode_step = (stats.decode_steps > 0).then(|| 1e3 * seconds / stats.decode_steps as f64);
    let flops = 2.0 * parameters as f64 * (prefill_tokens + stats.row_steps + prompts.len()) as f64;
    let mut record = json!({
        "device": format!("{device:?}"), "dtype": format!("{kind:?}"), "parameters": parameters,
        "rows": prompts.len(), "prompt_tokens": args.prompt_tokens,
        "min_length": args.min_length, "max_length": args.max_length,
        "generated_tokens": generated, "seconds": seconds,
        "tokens_per_s": generated as f64 / seconds,
        "decode_steps": stats.decode_steps, "row_steps": stats.row_steps,
        "graphed_steps": stats.graphed_steps,
        "rows_if_none_left": stats.decode_steps * prompts.len(),
        "ms_per_decode_step": ms_per_decode_step,
        "gflop_per_s": flops / seconds / 1e9,
        "kv_cache_bytes": stats.kv_cache_bytes,
        "peak_rss_bytes": crate::memory_stats::peak_rss_bytes(),
        "gpu_memory": crate::memory_stats::gpu_memory(device),
    });
    println!(
        "{} rows ({} prompts × {}), completions {}–{} tokens (log-uniform, forced), {} tokens in {:.3} s: {:.0} tok/s",
        prompts.len(), args.prompts, args.group, args.min_length, args.max_length, generated, seconds,
        generated as f64 / seconds
    );
    println!(
        "  {} decode steps, {} each (the prefill spread over them); {} row-steps of {} if no row left ({:.0}%); {:.1} GFLOP/s of model arithmetic",
        stats.decode_steps,
        ms_per_decode_step.map_or_else(|| "no time".to_string(), |ms| format!("{ms:.2} ms")),
        stats.row_steps,
        stats.decode_steps * prompts.len(),
        100.0 * stats.row_steps as f64 / (stats.decode_steps * prompts.len()).max(1) as f64,
        flops / seconds / 1e9
    );
    if stats.graphed_steps > 0 {
        println!(
            "  {} of the decode steps replayed as CUDA graphs",
            stats.graphed_steps
        );
    }
    if let Some(gbps) = args.memory_gbps {
        // Every decode step reads all the weights once: the memory-bandwidth bound.
        let bound = weight_bytes as f64 * (stats.decode_steps + 1) as f64 / (gbps * 1e9);
        println!(
            "  weights {:.2} GB read per step: bound {bound:.3} s at {gbps} GB/s; measured {:.2}x the bound",
            weight_bytes as f64 / 1e9,
            seconds / bound
        );
        record["memory_bound_seconds"] = json!(bound);
        record["over_memory_bound"] = json!(seconds / bound);
    }
    if args.compare_eager {
        let (eager, _) = policy.generate_with(&prompts, &sampling, DecodeSteps::Eager)?;
        let (identical, first_differences) = agreement(&last, &eager);
        let median = (!first_differences.is_empty()).then(|| {
            let mut sorted = first_differences.clone();
            sorted.sort_unstable();
            sorted[sorted.len() / 2]
        });
        println!(
            "  against eager decode steps: {identical} of {} completions identical{}",
            last.len(),
            median.map_or_else(String::new, |m| format!(
                " (the others part at token {m}, the median)"
            ))
        );
        record["eager_identical_rows"] = json!(identical);
        record["eager_first_difference_median"] = json!(median);
    }
    println!("{record}");
    Ok(())
}

/// How many completions are identical in `a` and `b`, and for each other the first token at
/// which they part.
fn agreement(a: &[Completion], b: &[Completion]) -> (usize, Vec<usize>) {
    let mut identical = 0;
    let mut parts = Vec::new();
    for (x, y) in a.iter().zip(b) {
        match x.ids.iter().zip(&y.ids).position(|(p, q)| p != q) {
            None if x.ids.len() == y.ids.len() => identical += 1,
            None => parts.push(x.ids.len().min(y.ids.len())),
            Some(at) => parts.push(at),
        }
    }
    (identical, parts)
}

/// Refuses a `--workload-out` that would replace what the user keeps: the model (or a file of
/// it), a directory, or a file that is not an earlier workload (one is replaced: a rerun).
fn check_workload_out(path: &std::path::Path, model: &std::path::Path) -> anyhow::Result<()> {
    crate::atomic_file::refuse_replacing(path, "--workload-out", model, "the model")?;
    crate::atomic_file::refuse_replacing_unless(path, "--workload-out", "workload", |bytes| {
        serde_json::from_slice::<serde_json::Value>(bytes)
            .is_ok_and(|json| json.get("prompts").is_some() && json.get("budgets").is_some())
    })
}

fn write_workload(path: &std::path::Path, workload: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    crate::atomic_file::write(path, workload.to_string())
}

fn synchronize(device: tch::Device) {
    if let tch::Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_counts_identical_completions_and_where_the_others_part() {
        let c = |ids: &[i64]| Completion {
            ids: ids.to_vec(),
            finished: false,
        };
        let a = [c(&[1, 2, 3]), c(&[1, 2, 3]), c(&[4, 5])];
        let b = [c(&[1, 2, 3]), c(&[1, 9, 3]), c(&[4, 5, 6])];
        assert_eq!(agreement(&a, &b), (1, vec![1, 2]));
    }
}
