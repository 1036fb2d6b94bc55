//! A full CRPO step (rollout, rewards, reference and policy passes, optimizer) timed on the
//! real trainer, with peak RSS against an estimate of what the step must hold.
//! Run: `cargo bench -p crpo-host --bench crpo_step [-- tiny|small|qwen2.5-0.5b-shape ...]
//! [--policy qwen2|qwen2-library] [--gradient-checkpointing] [--lora]` (`--lora`: adapters of
//! rank 32, alpha 16 on every linear layer, the reference being the base). G = 4, fixed-length completions
//! of 64 tokens, demo-vignette
//! prompts (~150 tokens), beta 0.04, one PPO epoch; prompts per step 1, 4 and 16 (4, 16 and 64
//! completions; 1 and 4 at the 0.5B shape), each in a process of its own. `--policy
//! qwen2-library` runs the same decoder loaded from a plugin library
//! (`examples/qwen2-library`): the loaded path must match the built-in's speed. Peak RSS is
//! set against the run's memory plan (host/src/train/memory_plan.rs). Prints a table and
//! writes `target/bench-results/crpo_step[-POLICY][-checkpointed].json`.

#[path = "../tests/support/mod.rs"]
mod support;

use crpo_host::plugins::PluginRegistry;
use crpo_host::rollout::tokenizer::Message;
use crpo_host::train::config::RunConfig;
use crpo_host::train::memory_plan;
use crpo_host::train::trainer::Trainer;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const GENERATIONS: usize = 4;
const LENGTH: usize = 64;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Peak resident set size since the last reset, in bytes (Linux VmHWM).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn reset_peak_rss() {
    // "5" resets VmHWM to the current RSS (Linux ≥ 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn current_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn run(
    preset_name: &str,
    prompts_per_step: usize,
    policy: &str,
    (checkpointing, lora): (bool, bool),
    registry: &PluginRegistry,
) -> Value {
    let model = preset_dir(preset_name);
    let work = tempfile::tempdir().unwrap();
    let prompts = work.path().join("prompts.jsonl");
    let mut lines = String::new();
    for line in std::fs::read_to_string(repo().join("data/demo/train.jsonl"))
        .unwrap()
        .lines()
    {
        let mut record: Value = serde_json::from_str(line).unwrap();
        let options: Vec<String> = record["options"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}. {}", v.as_str().unwrap()))
            .collect();
        record["question"] = json!(format!(
            "{}\n\n{}\nAnswer with the letter of the best option.",
            record["question"].as_str().unwrap(),
            options.join("\n")
        ));
        lines.push_str(&format!("{record}\n"));
    }
    std::fs::write(&prompts, lines).unwrap();
    // One warm-up step, then measured ones (one only at 0.5B scale: a step takes minutes here).
    let steps = if preset_name == "qwen2.5-0.5b-shape" { 2 } else { 3 };
    let config = format!(
        r#"
[run]
output_dir = "{out}"
max_steps = {steps}
save_steps = 1000
sample_steps = 0
[model]
policy = "{policy}"
path = "{model}"
device = "cpu"
dtype = "f32"
[data]
path = "{prompts}"
eval_fraction = 0.0
prompt_template = "{{question}}"
[[reward.objectives]]
plugin = "consistency"
[algorithm]
num_generations = {GENERATIONS}
prompts_per_step = {prompts_per_step}
mini_batch_size = {batch}
gradient_accumulation_steps = 1
learning_rate = 1e-6
beta = 0.04
max_completion_length = {LENGTH}
min_completion_length = {LENGTH}
gradient_checkpointing = {checkpointing}
{lora_table}"#,
        out = work.path().join("run").display(),
        model = model.display(),
        prompts = prompts.display(),
        batch = GENERATIONS * prompts_per_step,
        lora_table = if lora {
            "[model.lora]\nr = 32\nlora_alpha = 16\ntarget_modules = \"all-linear\"\n"
        } else {
            ""
        },
    );
    let config = RunConfig::parse(&config).unwrap();
    let config_for_plan = config.clone();
    let baseline = current_rss();
    reset_peak_rss();
    let trainer = Trainer::new(registry, config, Default::default()).unwrap();
    // The mean prompt length, as the trainer renders prompts (chat template included).
    let prompt_tokens = {
        let tokenizer = &trainer.policy().tokenizer;
        let lengths: Vec<usize> = std::fs::read_to_string(&prompts)
            .unwrap()
            .lines()
            .take(32)
            .map(|line| {
                let record: Value = serde_json::from_str(line).unwrap();
                let message = Message::new("user", record["question"].as_str().unwrap());
                tokenizer
                    .encode(&tokenizer.render_chat(&[message], true).unwrap())
                    .unwrap()
                    .len()
            })
            .collect();
        lengths.iter().sum::<usize>() / lengths.len()
    };
    let summary = trainer.run().unwrap();
    let peak = peak_rss().saturating_sub(baseline);
    let metrics: Vec<Value> = std::fs::read_to_string(summary.run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let measured = &metrics[1..]; // the first step warms up
    let median = |key: &str| {
        let mut values: Vec<f64> = measured.iter().map(|m| m[key].as_f64().unwrap()).collect();
        values.sort_by(|a, b| a.partial_cmp(b).unwrap());
        values[values.len() / 2]
    };
    // The plan at the measured prompt length (the config's max_prompt_length is a bound).
    let mut planned = config_for_plan;
    planned.algorithm.max_prompt_length = Some(prompt_tokens);
    let (plan, _, _) = memory_plan::plan_run(&planned, memory_plan::Phase::Train)
        .unwrap()
        .unwrap();
    let estimated = plan.peak() as f64;
    json!({
        "preset": preset_name,
        "policy": policy,
        "completions": GENERATIONS * prompts_per_step,
        "prompt_tokens": prompt_tokens,
        "step_seconds": median("step_time_s"),
        "rollout_tokens_per_s": median("rollout_tokens_per_s"),
        "train_tokens_per_s": median("train_tokens_per_s"),
        "peak_rss_bytes": peak,
        "gradient_checkpointing": checkpointing,
        "lora": lora,
        "estimated_bytes": estimated,
        "plan": {"weights": plan.weights, "adapters": plan.adapters, "reference": plan.reference, "gradients": plan.gradients,
                 "optimizer_state": plan.optimizer_state, "kv_cache": plan.kv_cache,
                 "activations": plan.activations, "gradient_buffers": plan.gradient_buffers,
                 "optimizer_step": plan.optimizer_step, "decode_weights": plan.decode_weights,
                 "peak": plan.peak()},
        "rss_over_estimate": peak as f64 / estimated,
        "threads": tch::get_num_threads(),
    })
}

/// Where `preset`'s model is written (once, by the parent process: a child that wrote it would
/// start its measurement with the writing's freed memory in its heap).
fn preset_dir(preset: &str) -> PathBuf {
    repo().join("target/bench-models").join(preset)
}

fn write_preset(preset: &str) {
    let model = preset_dir(preset);
    if !model.join("config.json").exists() {
        let registry = PluginRegistry::builtin_only();
        let qwen2 = registry.policy("qwen2").unwrap().plugin();
        qwen2.write_preset(preset, &model, 0).unwrap();
    }
}

/// Child-process mode: one configuration, its result as one JSON line on stdout.
const ONE: &str = "--one-configuration";

/// Runs `preset` × `prompts` in a fresh process: peak RSS is per process, and the allocator
/// keeps what an earlier configuration freed (host/src/memory.rs).
fn run_in_child(preset: &str, prompts: usize, policy: &str, (checkpointing, lora): (bool, bool)) -> Value {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            ONE,
            preset,
            &prompts.to_string(),
            policy,
            &checkpointing.to_string(),
            &lora.to_string(),
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success(), "{preset} with {prompts} prompts failed");
    let stdout = String::from_utf8(output.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn main() {
    crpo_host::memory::configure_for_training();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, preset, prompts, policy, checkpointing, lora] = args.as_slice() {
        if flag == ONE {
            let registry = if policy == "qwen2" {
                PluginRegistry::builtin_only()
            } else {
                let libraries = support::plugin_dir(&["qwen2_library"]);
                PluginRegistry::load(&[libraries.path().to_path_buf()]).unwrap()
            };
            let r = run(
                preset,
                prompts.parse().unwrap(),
                policy,
                (checkpointing == "true", lora == "true"),
                &registry,
            );
            println!("{r}");
            return;
        }
    }
    let policy = args
        .iter()
        .position(|a| a == "--policy")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "qwen2".into());
    let checkpointing = args.iter().any(|a| a == "--gradient-checkpointing");
    let lora = args.iter().any(|a| a == "--lora");
    let presets: Vec<String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with('-') && (*i == 0 || args[i - 1] != "--policy"))
        .map(|(_, a)| a.clone())
        .collect();
    let presets = if presets.is_empty() {
        vec!["tiny".to_string()]
    } else {
        presets
    };
    println!(
        "{:<20} {:>11} {:>10} {:>14} {:>14} {:>10} {:>10} {:>8}",
        "preset", "completions", "s/step", "rollout tok/s", "train tok/s", "peak MiB", "est. MiB", "ratio"
    );
    let mut results = Vec::new();
    for preset in &presets {
        write_preset(preset);
        // 64 completions of the 0.5B shape in one micro-batch need more than 24 GB.
        let sizes: &[usize] = if preset == "qwen2.5-0.5b-shape" {
            &[1, 4]
        } else {
            &[1, 4, 16]
        };
        for &prompts in sizes {
            let r = run_in_child(preset, prompts, &policy, (checkpointing, lora));
            let mib = |key: &str| r[key].as_f64().unwrap() / (1024.0 * 1024.0);
            println!(
                "{:<20} {:>11} {:>10.3} {:>14.1} {:>14.1} {:>10.0} {:>10.0} {:>8.2}",
                preset,
                r["completions"].as_u64().unwrap(),
                r["step_seconds"].as_f64().unwrap(),
                r["rollout_tokens_per_s"].as_f64().unwrap(),
                r["train_tokens_per_s"].as_f64().unwrap(),
                mib("peak_rss_bytes"),
                mib("estimated_bytes"),
                r["rss_over_estimate"].as_f64().unwrap()
            );
            results.push(r);
        }
    }
    let out = repo().join("target/bench-results");
    std::fs::create_dir_all(&out).unwrap();
    let name = format!(
        "crpo_step{}{}{}.json",
        if policy == "qwen2" {
            String::new()
        } else {
            format!("-{policy}")
        },
        if checkpointing { "-checkpointed" } else { "" },
        if lora { "-lora" } else { "" }
    );
    let path = out.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(&results).unwrap()).unwrap();
    println!("JSON: {}", path.display());
}
