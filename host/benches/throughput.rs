//! Generation and log-prob throughput of the engine over the built-in decoder, random weights.
//! Run: `cargo bench -p crpo-host --bench throughput [-- tiny|0.5b]`
//! Prompts of 32 tokens, 16 new tokens each (no EOS, so every sequence runs to the end). Rows
//! of group 1 have distinct prompts; group 4 is a CRPO batch: 4 samples of each prompt, which
//! share its prefill and its log-prob pass. Rates count every row's prompt and new tokens, so
//! a group's rate against group 1 at the same batch is the sharing's gain.

use crpo_host::rollout::generation::{generate, DecodeSteps, TokenSpace};
use crpo_host::rollout::logprobs::{completion_logprobs, ContinuationBatch};
use crpo_host::rollout::sampling::SamplingConfig;
use crpo_plugins_policy::config::DecoderConfig;
use crpo_plugins_policy::plugin::Qwen2Model;
use crpo_plugins_policy::policy::Policy;
use crpo_plugins_policy::qwen2::DecoderModel;
use std::time::Instant;
use tch::{nn::VarStore, Device, Kind};

const PROMPT: usize = 32;
const NEW: usize = 16;

fn config(name: &str) -> DecoderConfig {
    let json = match name {
        // The tiny preset's shape (vocab as the trained tokenizer gives).
        "tiny" => {
            serde_json::json!({"model_type": "qwen2", "vocab_size": 1280, "hidden_size": 64, "intermediate_size": 176,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": true})
        }
        // Qwen2.5-0.5B's shape.
        "0.5b" => {
            serde_json::json!({"model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
            "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
            "rope_theta": 1000000.0, "tie_word_embeddings": true})
        }
        other => panic!("unknown config {other} (tiny, 0.5b)"),
    };
    serde_json::from_value(json).unwrap()
}

fn main() {
    // As crpo-host does (host/src/memory.rs): libtorch's huge-page allocations.
    if std::env::var_os("THP_MEM_ALLOC_ENABLE").is_none() {
        std::env::set_var("THP_MEM_ALLOC_ENABLE", "1");
    }
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let names = if which.is_empty() {
        vec!["tiny".to_string(), "0.5b".to_string()]
    } else {
        which
    };
    println!(
        "threads: {}; prompt {PROMPT} tokens, {NEW} new tokens",
        tch::get_num_threads()
    );
    println!(
        "{:<6} {:>5} {:>5} {:>16} {:>18} {:>22}",
        "config", "batch", "group", "generate tok/s", "logprob fwd tok/s", "logprob fwd+bwd tok/s"
    );
    let mut records = Vec::new();
    for name in &names {
        let config = config(name);
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let decoder = DecoderModel::new(&vs.root(), &config);
        let model = Qwen2Model(Policy {
            config: config.clone(),
            vs,
            model: decoder,
            lora: None,
        });
        let tokens = TokenSpace {
            eos_ids: &[],
            pad_id: 0,
            usable_vocab: config.vocab_size,
        };
        for (batch, group) in [(1usize, 1usize), (16, 1), (16, 4), (64, 1)] {
            let prompts: Vec<Vec<i64>> = (0..batch)
                .map(|row| row / group)
                .map(|b| (0..PROMPT).map(|t| ((b * 31 + t * 7) % 500) as i64 + 1).collect())
                .collect();
            let sampling = SamplingConfig {
                max_new_tokens: NEW,
                temperature: 1.0,
                ..SamplingConfig::default()
            };
            let start = Instant::now();
            let (completions, _) = generate(
                &model,
                (Kind::Float, Device::Cpu),
                &prompts,
                &tokens,
                &sampling,
                DecodeSteps::Eager,
            )
            .unwrap();
            let generate_rate = (batch * NEW) as f64 / start.elapsed().as_secs_f64();
            let completion_ids: Vec<Vec<i64>> = completions.into_iter().map(|c| c.ids).collect();

            let row_tokens = (batch * (PROMPT + NEW)) as f64;
            let start = Instant::now();
            let batch_rows = ContinuationBatch::new(&prompts, &completion_ids, 0, Device::Cpu).unwrap();
            let _ = tch::no_grad(|| completion_logprobs(&model, &batch_rows, 1.0, false)).unwrap();
            let forward_rate = row_tokens / start.elapsed().as_secs_f64();
            let start = Instant::now();
            let out = completion_logprobs(&model, &batch_rows, 1.0, false).unwrap();
            out.logprobs.sum(Kind::Float).backward();
            let backward_rate = row_tokens / start.elapsed().as_secs_f64();
            model.0.vs.variables().values().for_each(|v| {
                let mut grad = v.grad();
                if grad.defined() {
                    let _ = grad.zero_();
                }
            });
            println!("{name:<6} {batch:>5} {group:>5} {generate_rate:>16.1} {forward_rate:>18.1} {backward_rate:>22.1}");
            records.push(serde_json::json!({"config": name, "batch": batch, "group": group, "generate_tokens_per_s": generate_rate,
                "logprob_forward_tokens_per_s": forward_rate, "logprob_forward_backward_tokens_per_s": backward_rate}));
        }
    }
    println!("{}", serde_json::Value::Array(records));
}
