//! The policy update on completions of realistic, varied lengths: one padded forward/backward
//! pass per micro-batch (`group_by_length = false`) against passes of completions of like
//! length (`group_by_length = true`, the default), same update (host/tests/packed_passes.rs).
//! Run: `cargo bench -p crpo-host --bench logprob_passes [-- tiny|qwen2.5-0.5b-shape]`.
//! 4 prompts of 128 tokens × 8 completions, lengths drawn log-uniformly in 16–MAX (tiny 1024,
//! 0.5B 256), micro-batches of 8, one optimizer update, no reference (beta 0), random weights.
//! Prints seconds per update (one warm-up, then alternating measured runs) and the padded
//! tokens each plan runs through the model.

use crpo_host::plugins::PluginRegistry;
use crpo_host::rollout::Policy;
use crpo_host::train::config::AlgorithmConfig;
use crpo_host::train::micro_batches::{padded_tokens, plan, Rows};
use crpo_host::train::optimizer::AdamW;
use crpo_host::train::update::{update_policy, Batch, Reference};
use crpo_plugins_policy::presets::{write_preset, Preset};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::Instant;

const PROMPTS: usize = 4;
const GROUP: usize = 8;
const PROMPT_TOKENS: usize = 128;

fn main() {
    let preset = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "tiny".into());
    let max_length = if preset == "tiny" { 1024 } else { 256 };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-models")
        .join(&preset);
    if !dir.join("config.json").exists() {
        let kind = Preset::from_name(&preset).unwrap_or_else(|| panic!("unknown preset {preset}"));
        write_preset(&dir, kind, 0).unwrap();
    }
    let policy = Policy::load_with(
        &PluginRegistry::builtin_only(),
        "qwen2",
        &dir,
        tch::Device::Cpu,
        tch::Kind::Float,
        &serde_json::Value::Null,
    )
    .unwrap();
    let vocab = policy.tokenizer.vocab_size() as i64;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut ids = |n: usize| -> Vec<i64> { (0..n).map(|_| rng.random_range(3..vocab)).collect() };
    let prompts: Vec<Vec<i64>> = (0..PROMPTS)
        .flat_map(|_| std::iter::repeat_n(ids(PROMPT_TOKENS), GROUP))
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let (low, high) = (16f64.ln(), (max_length as f64).ln());
    let lengths: Vec<usize> = (0..prompts.len())
        .map(|_| (low + rng.random::<f64>() * (high - low)).exp().round() as usize)
        .collect();
    let completions: Vec<Vec<i64>> = lengths.iter().map(|&n| ids(n)).collect();
    let advantages: Vec<f32> = (0..prompts.len())
        .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let truncated = vec![false; prompts.len()];
    let batch = Batch {
        prompts: &prompts,
        completions: &completions,
        advantages: &advantages,
        truncated: &truncated,
    };
    let config = |group_by_length| AlgorithmConfig {
        mini_batch_size: 8,
        gradient_accumulation_steps: 4,
        beta: 0.0,
        max_completion_length: max_length,
        group_by_length,
        ..AlgorithmConfig::default()
    };
    let counted = vec![true; prompts.len()];
    let rows = Rows {
        prompts: &prompts,
        completions: &completions,
        counted: &counted,
    };
    let tokens = |config: &AlgorithmConfig| -> usize {
        plan(&rows, config)
            .iter()
            .flat_map(|update| update.passes.iter())
            .map(|pass| padded_tokens(&rows, pass))
            .sum()
    };
    let real: usize = PROMPTS * PROMPT_TOKENS + lengths.iter().sum::<usize>();
    let mut optimizer = AdamW::new(policy.parameters(), AlgorithmConfig::default().adam_settings());
    let mut run = |config: &AlgorithmConfig| {
        let started = Instant::now();
        update_policy(
            &policy,
            Reference::None,
            &mut optimizer,
            &batch,
            config,
            1,
            10,
            None,
        )
        .unwrap();
        started.elapsed().as_secs_f64()
    };
    let (padded, by_length) = (config(false), config(true));
    run(&by_length);
    let mut seconds = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        seconds[0].push(run(&padded));
        seconds[1].push(run(&by_length));
    }
    println!(
        "{preset}: {} completions of 16–{max_length} tokens ({} in all), prompts {PROMPTS} × {PROMPT_TOKENS}; real tokens {real}",
        prompts.len(),
        lengths.iter().sum::<usize>()
    );
    println!("{:<22} {:>14} {:>18}", "passes", "padded tokens", "s per update");
    for (label, config, times) in [
        ("per micro-batch", &padded, &seconds[0]),
        ("by length", &by_length, &seconds[1]),
    ] {
        let shown: Vec<String> = times.iter().map(|s| format!("{s:.3}")).collect();
        println!("{label:<22} {:>14} {:>18}", tokens(config), shown.join(" / "));
    }
}
