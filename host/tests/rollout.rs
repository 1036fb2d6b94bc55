//! The rollout engine on a real model through the path users take: a Hugging Face directory
//! (the tiny preset) loaded through the registry's `qwen2` plugin, its tokenizer and chat
//! template, generation over the engine's cache, and the log-prob pass.

use crpo_host::plugins::PluginRegistry;
use crpo_host::rollout::fixed_shape_steps::FixedShapeSettings;
use crpo_host::rollout::generation::{Completion, DecodeSteps};
use crpo_host::rollout::logprobs::rows;
use crpo_host::rollout::sampling::SamplingConfig;
use crpo_host::rollout::tokenizer::Message;
use crpo_host::rollout::Policy;
use std::path::Path;
use tch::{Device, Kind};

fn tiny_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    crpo_plugins_policy::presets::write_tiny(dir.path(), 3).unwrap();
    dir
}

fn load(dir: &Path) -> Policy {
    Policy::load_with(
        &PluginRegistry::builtin_only(),
        "qwen2",
        dir,
        Device::Cpu,
        Kind::Float,
        &serde_json::Value::Null,
    )
    .unwrap()
}

fn greedy(max_new_tokens: usize) -> SamplingConfig {
    SamplingConfig {
        max_new_tokens,
        greedy: true,
        ..SamplingConfig::default()
    }
}

fn generate(policy: &Policy, prompts: &[&str], sampling: &SamplingConfig) -> Vec<(String, Completion)> {
    let ids: Vec<Vec<i64>> = prompts
        .iter()
        .map(|p| policy.tokenizer.encode(p).unwrap())
        .collect();
    let (completions, _) = policy.generate(&ids, sampling).unwrap();
    completions
        .into_iter()
        .map(|c| (policy.decode(&c.ids).unwrap(), c))
        .collect()
}

#[test]
fn tokenizer_and_chat_template_work() {
    let dir = tiny_dir();
    let policy = load(dir.path());
    let text = "A patient presents with fever, productive cough and focal crackles.";
    let ids = policy.tokenizer.encode(text).unwrap();
    assert!(
        ids.len() < text.len() / 2,
        "the trained BPE merges common clinical words: {} ids",
        ids.len()
    );
    assert_eq!(policy.tokenizer.decode(&ids).unwrap(), text);
    let messages = [
        Message::new("system", "Answer briefly."),
        Message::new("user", "Which test?"),
    ];
    let rendered = policy.tokenizer.render_chat(&messages, true).unwrap();
    assert_eq!(
        rendered,
        "<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nWhich test?<|im_end|>\n<|im_start|>assistant\n"
    );
    let eos = policy.tokenizer.encode("<|im_end|>").unwrap();
    assert_eq!(eos.len(), 1, "special tokens are single ids");
    assert_eq!(policy.tokenizer.eos_ids(), &[eos[0] as u32]);
}

#[test]
fn generation_is_deterministic_when_greedy_and_reproducible_when_seeded() {
    let dir = tiny_dir();
    let policy = load(dir.path());
    let prompts = ["The most likely diagnosis is"];
    assert_eq!(
        generate(&policy, &prompts, &greedy(12)),
        generate(&policy, &prompts, &greedy(12))
    );
    let sampling = SamplingConfig {
        max_new_tokens: 12,
        min_new_tokens: 0,
        temperature: 1.0,
        top_p: 0.95,
        top_k: 50,
        greedy: false,
        seed: 11,
        first_stream: 0,
        row_budgets: Vec::new(),
    };
    let a = generate(&policy, &prompts, &sampling);
    assert_eq!(a, generate(&policy, &prompts, &sampling));
    // min_new_tokens holds EOS back: every completion runs to the full length.
    let fixed = SamplingConfig {
        max_new_tokens: 40,
        min_new_tokens: 40,
        ..sampling.clone()
    };
    for (_, completion) in generate(&policy, &prompts, &fixed) {
        assert_eq!(completion.ids.len(), 40);
        assert!(!completion.finished);
    }
    let other_seed = generate(&policy, &prompts, &SamplingConfig { seed: 12, ..sampling });
    assert_ne!(a, other_seed, "another seed samples differently");
    let completion = &a[0].1;
    assert!(completion.finished || completion.ids.len() == 12);
    let vocab = policy.tokenizer.vocab_size() as i64;
    assert!(
        completion.ids.iter().all(|&id| id < vocab),
        "never samples padded embedding rows"
    );
}

#[test]
fn batched_generation_equals_generating_each_prompt_alone() {
    let dir = tiny_dir();
    let policy = load(dir.path());
    let prompts = [
        "First-line management of gout is",
        "Vital signs: temperature 38.9 C, pulse 112/min, respirations 24/min.",
        "Which?",
    ];
    let batch = generate(&policy, &prompts, &greedy(10));
    for (prompt, batched) in prompts.iter().zip(&batch) {
        let alone = generate(&policy, &[prompt], &greedy(10)).remove(0);
        assert_eq!(&alone, batched, "prompt {prompt:?}");
    }
}

#[test]
fn finished_rows_leave_the_batch_without_changing_the_others() {
    let dir = tiny_dir();
    let policy = load(dir.path());
    let prompts: Vec<Vec<i64>> = [
        "Gout is",
        "The best initial test for suspected",
        "Which?",
        "Fever",
    ]
    .iter()
    .map(|p| policy.tokenizer.encode(p).unwrap())
    .collect();
    let sampling = SamplingConfig {
        max_new_tokens: 30,
        temperature: 1.0,
        seed: 5,
        ..SamplingConfig::default()
    };
    let (together, stats) = policy.generate(&prompts, &sampling).unwrap();
    let longest = together.iter().map(|c| c.ids.len()).max().unwrap();
    assert!(stats.decode_steps < longest, "{stats:?}");
    let rows_if_all_ran = stats.decode_steps * prompts.len();
    let finished_early = together.iter().any(|c| c.finished && c.ids.len() + 1 < longest);
    if finished_early {
        assert!(
            stats.row_steps < rows_if_all_ran,
            "finished rows kept running: {stats:?}"
        );
    }
    assert!(stats.kv_cache_bytes > 0);
    // Row i draws from stream i: generating only the first i + 1 prompts (other rows, other
    // compactions) samples row i the same.
    for (i, completion) in together.iter().enumerate() {
        let (fewer, _) = policy.generate(&prompts[..=i], &sampling).unwrap();
        assert_eq!(&fewer[i], completion, "row {i}");
    }
}

#[test]
fn fixed_shape_steps_sample_what_eager_steps_sample() {
    // The path a GPU replays as CUDA graphs (row buckets, an attention window growing in steps,
    // live rows moved to the front in place), run eagerly here: the same completions.
    let dir = tiny_dir();
    let policy = load(dir.path());
    let prompts: Vec<Vec<i64>> = [
        "Gout is",
        "Gout is",
        "The best initial test for suspected pulmonary embolism in a stable patient",
        "Which?",
        "Fever",
        "Fever",
    ]
    .iter()
    .map(|p| policy.tokenizer.encode(p).unwrap())
    .collect();
    assert_eq!(
        DecodeSteps::for_model(&*policy.model, Device::Cpu),
        DecodeSteps::Eager,
        "no graphs on the CPU"
    );
    let fixed = DecodeSteps::Fixed(FixedShapeSettings {
        capture: false,
        window_step: 4,
    });
    let budgets = SamplingConfig {
        max_new_tokens: 24,
        min_new_tokens: 24,
        temperature: 1.0,
        seed: 3,
        row_budgets: vec![2, 24, 5, 11, 1, 17],
        ..SamplingConfig::default()
    };
    let sampled = SamplingConfig {
        max_new_tokens: 30,
        temperature: 1.0,
        seed: 9,
        ..SamplingConfig::default()
    };
    for sampling in [greedy(12), budgets.clone(), sampled] {
        let (eager, eager_stats) = policy
            .generate_with(&prompts, &sampling, DecodeSteps::Eager)
            .unwrap();
        let (same, stats) = policy.generate_with(&prompts, &sampling, fixed).unwrap();
        assert_eq!(same, eager, "{sampling:?}");
        assert_eq!(stats.decode_steps, eager_stats.decode_steps, "{sampling:?}");
        assert_eq!(stats.graphed_steps, 0);
    }
    // Rows leave in buckets of 6, 4, 2 and 1 as the budgets (2, 24, 5, 11, 1, 17) run out:
    // the step after token 1 runs 6 rows (5 live), the next nine 4 (4, then 3 live), six
    // run 2 and the last seven 1.
    let (_, stats) = policy.generate_with(&prompts, &budgets, fixed).unwrap();
    assert_eq!(
        (stats.decode_steps, stats.row_steps),
        (23, 6 + 9 * 4 + 6 * 2 + 7),
        "{stats:?}"
    );
}

#[test]
fn each_row_stops_at_its_own_budget() {
    let dir = tiny_dir();
    let policy = load(dir.path());
    let prompt = policy.tokenizer.encode("Gout is").unwrap();
    let sampling = SamplingConfig {
        max_new_tokens: 20,
        min_new_tokens: 20,
        temperature: 1.0,
        seed: 2,
        row_budgets: vec![3, 20, 7, 0],
        ..SamplingConfig::default()
    };
    let (completions, _) = policy.generate(&vec![prompt; 4], &sampling).unwrap();
    let lengths: Vec<usize> = completions.iter().map(|c| c.ids.len()).collect();
    assert_eq!(lengths, vec![3, 20, 7, 0]);
    assert!(
        completions.iter().all(|c| !c.finished),
        "cut at a budget, not finished"
    );
    // A row's tokens do not depend on its budget, only on its stream.
    let (longer, _) = policy
        .generate(
            &vec![policy.tokenizer.encode("Gout is").unwrap(); 4],
            &SamplingConfig {
                row_budgets: vec![20; 4],
                ..sampling
            },
        )
        .unwrap();
    assert_eq!(completions[0].ids, longer[0].ids[..3]);
    assert_eq!(completions[2].ids, longer[2].ids[..7]);
}

#[test]
fn each_sequence_stops_at_its_own_eos() {
    let dir = tiny_dir();
    let policy = load(dir.path());
    let prompts: Vec<Vec<i64>> = ["Gout is", "The best initial test for suspected"]
        .iter()
        .map(|p| policy.tokenizer.encode(p).unwrap())
        .collect();
    // Both ways of running decode steps (fixed shapes: what CUDA graphs replay).
    let fixed = DecodeSteps::Fixed(FixedShapeSettings {
        capture: false,
        window_step: 4,
    });
    for steps in [DecodeSteps::Eager, fixed] {
        let run = |eos: &[u32]| {
            let space = crpo_host::rollout::generation::TokenSpace {
                eos_ids: eos,
                pad_id: 0,
                usable_vocab: 10_000,
            };
            crpo_host::rollout::generation::generate(
                &*policy.model,
                (Kind::Float, Device::Cpu),
                &prompts,
                &space,
                &greedy(6),
                steps,
            )
            .unwrap()
            .0
        };
        let free = run(&[]);
        // Declare the first prompt's third greedy token an EOS: that sequence stops there, finished,
        // while the other (if it never produces that token) runs to max_new_tokens.
        let eos = free[0].ids[2];
        let stopped = run(&[eos as u32]);
        let first_eos = free[0].ids.iter().position(|&t| t == eos).unwrap();
        assert_eq!(stopped[0].ids, free[0].ids[..=first_eos].to_vec());
        assert!(stopped[0].finished);
        match free[1].ids.iter().position(|&t| t == eos) {
            Some(at) => assert_eq!(stopped[1].ids, free[1].ids[..=at].to_vec()),
            None => assert!(stopped[1].ids == free[1].ids && !stopped[1].finished),
        }
    }
}

#[test]
fn logprobs_agree_with_greedy_choices_and_ignore_padding() {
    let dir = tiny_dir();
    let policy = load(dir.path());
    let prompts: Vec<Vec<i64>> = ["The best initial test is", "Which?"]
        .iter()
        .map(|p| policy.tokenizer.encode(p).unwrap())
        .collect();
    let completions: Vec<Vec<i64>> = prompts
        .iter()
        .map(|p| {
            policy
                .generate(std::slice::from_ref(p), &greedy(5))
                .unwrap()
                .0
                .remove(0)
                .ids
        })
        .collect();
    let batch = tch::no_grad(|| policy.logprobs(&prompts, &completions, false)).unwrap();
    let lengths: Vec<usize> = completions.iter().map(Vec::len).collect();
    let batch_rows = rows(&batch.logprobs, &lengths);
    let vocab = policy.tokenizer.vocab_size() as f64;
    for (i, (prompt, completion)) in prompts.iter().zip(&completions).enumerate() {
        let alone = tch::no_grad(|| {
            policy.logprobs(
                std::slice::from_ref(prompt),
                std::slice::from_ref(completion),
                false,
            )
        })
        .unwrap();
        let alone_row = rows(&alone.logprobs, &lengths[i..=i]).remove(0);
        for (a, b) in alone_row.iter().zip(&batch_rows[i]) {
            assert!((a - b).abs() < 1e-5, "padding changed a log-prob: {a} vs {b}");
        }
        // Greedy tokens are the most likely ones: their log-prob is at least log(1/V).
        assert!(alone_row.iter().all(|&lp| lp <= 0.0 && lp > -vocab.ln() - 1.0));
    }
    assert_eq!(
        batch.mask.sum(Kind::Float).double_value(&[]) as usize,
        lengths.iter().sum::<usize>()
    );
    let entropies = rows(&batch.entropies, &lengths);
    assert!(entropies
        .iter()
        .flatten()
        .all(|&e| e >= 0.0 && e <= vocab.ln() + 1.0));
    let err = policy
        .logprobs(&[vec![]], &[vec![1]], false)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("prompt is empty"), "{err}");
}

#[test]
fn a_saved_policy_carries_its_tokenizer() {
    let dir = tiny_dir();
    let policy = load(dir.path());
    let out = tempfile::tempdir().unwrap();
    policy.save(out.path()).unwrap();
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(out.path().join(file).exists(), "{file}");
    }
    let again = load(out.path());
    assert_eq!(
        generate(&policy, &["Gout is"], &greedy(8)),
        generate(&again, &["Gout is"], &greedy(8))
    );
}

#[test]
fn a_batch_generated_in_parts_samples_what_it_samples_whole() {
    // What `algorithm.rollout_batch_size` does to a step: its groups are generated in batches,
    // each numbering its sequences' random streams from where the one before stopped.
    let dir = tiny_dir();
    let policy = load(dir.path());
    let prompts: Vec<Vec<i64>> = [
        "Gout is",
        "Gout is",
        "The most likely diagnosis is",
        "The most likely diagnosis is",
    ]
    .iter()
    .map(|t| policy.tokenizer.encode(t).unwrap())
    .collect();
    let sampling = SamplingConfig {
        max_new_tokens: 16,
        temperature: 1.0,
        seed: 5,
        ..SamplingConfig::default()
    };
    let (whole, _) = policy.generate(&prompts, &sampling).unwrap();
    let (first, _) = policy.generate(&prompts[..2], &sampling).unwrap();
    let (second, _) = policy
        .generate(
            &prompts[2..],
            &SamplingConfig {
                first_stream: 2,
                ..sampling.clone()
            },
        )
        .unwrap();
    assert_eq!(whole, [first, second].concat());
    // Without the offset the second half would repeat the first's streams: a real difference.
    let (unnumbered, _) = policy.generate(&prompts[2..], &sampling).unwrap();
    assert_ne!(whole[2..], unnumbered[..]);
}
