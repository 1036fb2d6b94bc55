//! The policy through the path users take: a Hugging Face directory (the tiny preset, written
//! by the project) loaded, generating, scored, saved and loaded again.

use crpo_plugins_policy::generation::SamplingConfig;
use crpo_plugins_policy::logprobs::{completion_logprobs, rows};
use crpo_plugins_policy::policy::Policy;
use crpo_plugins_policy::tiny::write_tiny;
use crpo_plugins_policy::tokenizer::Message;
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn tiny_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), 3).unwrap();
    dir
}

fn load(dir: &Path) -> Policy {
    Policy::load(dir, Device::Cpu, Kind::Float).unwrap()
}

fn greedy(max_new_tokens: usize) -> SamplingConfig {
    SamplingConfig {
        max_new_tokens,
        greedy: true,
        ..SamplingConfig::default()
    }
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
        Message {
            role: "system".into(),
            content: "Answer briefly.".into(),
        },
        Message {
            role: "user".into(),
            content: "Which test?".into(),
        },
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
    let prompts = vec!["The most likely diagnosis is".to_string()];
    let first = policy.generate_texts(&prompts, &greedy(12)).unwrap();
    let second = policy.generate_texts(&prompts, &greedy(12)).unwrap();
    assert_eq!(first, second);
    let sampling = SamplingConfig {
        max_new_tokens: 12,
        min_new_tokens: 0,
        temperature: 1.0,
        top_p: 0.95,
        top_k: 50,
        greedy: false,
        seed: 11,
    };
    let a = policy.generate_texts(&prompts, &sampling).unwrap();
    let b = policy.generate_texts(&prompts, &sampling).unwrap();
    assert_eq!(a, b);
    // min_new_tokens holds EOS back: every completion runs to the full length.
    let fixed = SamplingConfig {
        max_new_tokens: 40,
        min_new_tokens: 40,
        ..sampling
    };
    for (_, completion) in policy.generate_texts(&prompts, &fixed).unwrap() {
        assert_eq!(completion.ids.len(), 40);
        assert!(!completion.finished);
    }
    let other_seed = policy
        .generate_texts(
            &prompts,
            &SamplingConfig {
                seed: 12,
                ..sampling.clone()
            },
        )
        .unwrap();
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
    let prompts = vec![
        "First-line management of gout is".to_string(),
        "Vital signs: temperature 38.9 C, pulse 112/min, respirations 24/min.".to_string(),
        "Which?".to_string(),
    ];
    let batch = policy.generate_texts(&prompts, &greedy(10)).unwrap();
    for (prompt, batched) in prompts.iter().zip(&batch) {
        let alone = policy
            .generate_texts(std::slice::from_ref(prompt), &greedy(10))
            .unwrap()
            .remove(0);
        assert_eq!(&alone, batched, "prompt {prompt:?}");
    }
}

#[test]
fn save_then_load_round_trips_exactly() {
    let dir = tiny_dir();
    let policy = load(dir.path());
    let out = tempfile::tempdir().unwrap();
    policy.save(out.path()).unwrap();
    let reloaded = load(out.path());
    let original = policy.vs.variables();
    let copy = reloaded.vs.variables();
    assert_eq!(original.len(), copy.len());
    for (name, tensor) in &original {
        assert!(tensor.equal(&copy[name]), "{name} differs after save/load");
    }
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(
        saved["architectures"][0], "Qwen2ForCausalLM",
        "unknown keys are kept"
    );
    assert!(
        saved.get("head_dim").is_none(),
        "absent options are not written as null"
    );
    assert!(out.path().join("tokenizer.json").exists() && out.path().join("tokenizer_config.json").exists());
}

#[test]
fn missing_or_misshapen_tensor_is_named() {
    let dir = tiny_dir();
    let policy = load(dir.path());
    // Drop one tensor and rewrite the file.
    let broken = tempfile::tempdir().unwrap();
    policy.save(broken.path()).unwrap();
    let path = broken.path().join("model.safetensors");
    let tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .filter(|(name, _)| name != "model.layers.1.mlp.up_proj.weight")
        .collect();
    Tensor::write_safetensors(&tensors, &path).unwrap();
    let err = Policy::load(broken.path(), Device::Cpu, Kind::Float)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`model.layers.1.mlp.up_proj.weight` is missing"),
        "{err}"
    );

    let reshaped: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(name, t)| {
            if name == "model.norm.weight" {
                (name, Tensor::ones([3], (Kind::Float, Device::Cpu)))
            } else {
                (name, t)
            }
        })
        .collect();
    Tensor::write_safetensors(&reshaped, &path).unwrap();
    let err = Policy::load(broken.path(), Device::Cpu, Kind::Float)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`model.norm.weight`") && err.contains("[3]") && err.contains("[64]"),
        "{err}"
    );

    std::fs::remove_file(&path).unwrap();
    let err = Policy::load(broken.path(), Device::Cpu, Kind::Float)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("no model.safetensors or model.safetensors.index.json"),
        "{err}"
    );
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
            crpo_plugins_policy::generation::generate(
                &policy.model,
                std::slice::from_ref(p),
                &[u32::MAX],
                0,
                10_000,
                &greedy(5),
            )
            .remove(0)
            .ids
        })
        .collect();
    let pad = policy.tokenizer.pad_id() as i64;
    let batch = tch::no_grad(|| completion_logprobs(&policy.model, &prompts, &completions, pad, false));
    let lengths: Vec<usize> = completions.iter().map(Vec::len).collect();
    let batch_rows = rows(&batch.logprobs, &lengths);
    for (i, (prompt, completion)) in prompts.iter().zip(&completions).enumerate() {
        let alone = tch::no_grad(|| {
            completion_logprobs(
                &policy.model,
                std::slice::from_ref(prompt),
                std::slice::from_ref(completion),
                pad,
                false,
            )
        });
        let alone_row = rows(&alone.logprobs, &lengths[i..=i]).remove(0);
        for (a, b) in alone_row.iter().zip(&batch_rows[i]) {
            assert!((a - b).abs() < 1e-5, "padding changed a log-prob: {a} vs {b}");
        }
        // Greedy tokens are the most likely ones: their log-prob is at least log(1/V) and the
        // entropy bounds hold.
        assert!(alone_row
            .iter()
            .all(|&lp| lp <= 0.0 && lp > -(policy.config.vocab_size as f64).ln()));
    }
    assert_eq!(
        batch.mask.sum(Kind::Float).double_value(&[]) as usize,
        lengths.iter().sum::<usize>()
    );
    let entropies = rows(&batch.entropies, &lengths);
    assert!(entropies
        .iter()
        .flatten()
        .all(|&e| e >= 0.0 && e <= (policy.config.vocab_size as f64).ln() + 1e-4));
}

#[test]
fn loads_in_bf16_with_logits_close_to_f32() {
    let dir = tiny_dir();
    let f32_policy = load(dir.path());
    let bf16_policy = Policy::load(dir.path(), Device::Cpu, Kind::BFloat16).unwrap();
    let ids = Tensor::from_slice(
        &f32_policy
            .tokenizer
            .encode("Gout is treated with colchicine")
            .unwrap(),
    )
    .unsqueeze(0);
    let mask = ids.ones_like();
    let a = tch::no_grad(|| f32_policy.model.forward(&ids, &mask, None));
    let b = tch::no_grad(|| bf16_policy.model.forward(&ids, &mask, None)).to_kind(Kind::Float);
    assert_eq!(b.kind(), Kind::Float);
    let diff = (&a - &b).abs().max().double_value(&[]);
    assert!(diff < 0.05, "bf16 logits drift {diff}");
}

#[test]
fn sharded_checkpoint_loads_like_a_single_file() {
    let dir = tiny_dir();
    let policy = load(dir.path());
    let sharded = tempfile::tempdir().unwrap();
    policy.save(sharded.path()).unwrap();
    // Split model.safetensors into two shards with an index, as transformers writes them.
    let single = sharded.path().join("model.safetensors");
    let tensors = Tensor::read_safetensors(&single).unwrap();
    std::fs::remove_file(&single).unwrap();
    let (first, second): (Vec<_>, Vec<_>) = tensors
        .into_iter()
        .partition(|(name, _)| name.contains("layers.0."));
    let mut weight_map = serde_json::Map::new();
    for (file, shard) in [
        ("model-00001-of-00002.safetensors", &first),
        ("model-00002-of-00002.safetensors", &second),
    ] {
        Tensor::write_safetensors(shard, sharded.path().join(file)).unwrap();
        for (name, _) in shard.iter() {
            weight_map.insert(name.clone(), file.into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(
        sharded.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();

    let reloaded = load(sharded.path());
    for (name, tensor) in policy.vs.variables() {
        assert!(tensor.equal(&reloaded.vs.variables()[&name]), "{name} differs");
    }
}

#[test]
fn each_sequence_stops_at_its_own_eos() {
    let dir = tiny_dir();
    let policy = load(dir.path());
    let prompts: Vec<Vec<i64>> = ["Gout is", "The best initial test for suspected"]
        .iter()
        .map(|p| policy.tokenizer.encode(p).unwrap())
        .collect();
    let free = crpo_plugins_policy::generation::generate(&policy.model, &prompts, &[], 0, 10_000, &greedy(6));
    // Declare the first prompt's third greedy token an EOS: that sequence stops there, finished,
    // while the other (if it never produces that token) runs to max_new_tokens.
    let eos = free[0].ids[2];
    let stopped = crpo_plugins_policy::generation::generate(
        &policy.model,
        &prompts,
        &[eos as u32],
        0,
        10_000,
        &greedy(6),
    );
    let first_eos = free[0].ids.iter().position(|&t| t == eos).unwrap();
    assert_eq!(stopped[0].ids, free[0].ids[..=first_eos].to_vec());
    assert!(stopped[0].finished);
    match free[1].ids.iter().position(|&t| t == eos) {
        Some(at) => assert_eq!(stopped[1].ids, free[1].ids[..=at].to_vec()),
        None => assert!(stopped[1].ids == free[1].ids && !stopped[1].finished),
    }
}

#[test]
fn bf16_checkpoint_files_load() {
    let dir = tiny_dir();
    let bf16 = Policy::load(dir.path(), Device::Cpu, Kind::BFloat16).unwrap();
    let out = tempfile::tempdir().unwrap();
    bf16.save(out.path()).unwrap();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["torch_dtype"], "bfloat16");
    // Read back into an f32 model: every value is the bf16 value, exactly.
    let f32_policy = load(out.path());
    for (name, tensor) in bf16.vs.variables() {
        assert!(
            tensor
                .to_kind(Kind::Float)
                .equal(&f32_policy.vs.variables()[&name]),
            "{name}"
        );
    }
}

#[test]
fn the_builtin_policy_plugin_serves_the_decoder_through_the_sdk_interface() {
    use crpo_plugins_policy::plugin::Qwen2PolicyPlugin;
    use crpo_sdk::policy::{PolicyLoad, PolicyPlugin};
    let dir = tiny_dir();
    let options = serde_json::Value::Null;
    let request = PolicyLoad {
        dir: dir.path(),
        device: Device::Cpu,
        kind: Kind::Float,
        options: &options,
    };
    let model = Qwen2PolicyPlugin.load(&request).unwrap();
    let ids = Tensor::from_slice(&[5i64, 9, 13, 2, 7]).unsqueeze(0);
    let ones = ids.ones_like();
    let full = tch::no_grad(|| model.forward(&ids, &ones, None)).unwrap();
    let cache = model.new_cache();
    let head =
        tch::no_grad(|| model.forward(&ids.narrow(1, 0, 3), &ones.narrow(1, 0, 3), Some(cache))).unwrap();
    let tail =
        tch::no_grad(|| model.forward(&ids.narrow(1, 3, 2), &ones.narrow(1, 3, 2), Some(cache))).unwrap();
    // With a cache the plugin returns the last position's logits only (all generation reads).
    assert_eq!(head.size()[1], 1);
    let expected = Tensor::cat(&[full.narrow(1, 2, 1), full.narrow(1, 4, 1)], 1);
    let diff = (&expected - Tensor::cat(&[head, tail], 1))
        .abs()
        .max()
        .double_value(&[]);
    assert!(
        diff < 1e-4,
        "cached decoding through the plugin differs by {diff}"
    );
    model.drop_cache(cache);
    assert!(
        model.forward(&ids, &ones, Some(cache)).is_err(),
        "a dropped cache is gone"
    );

    // Parameters share storage with the model: a step on them changes its output.
    let parameters = model.parameters();
    assert_eq!(parameters.len(), policy_variable_count(dir.path()));
    tch::no_grad(|| {
        for (_, p) in &parameters {
            let _ = p.shallow_clone().fill_(0.01);
        }
    });
    let after = tch::no_grad(|| model.forward(&ids, &ones, None)).unwrap();
    assert!((&after - &full).abs().max().double_value(&[]) > 1e-3);

    let bad = serde_json::json!({"lora": 8});
    let request = PolicyLoad {
        dir: dir.path(),
        device: Device::Cpu,
        kind: Kind::Float,
        options: &bad,
    };
    assert!(Qwen2PolicyPlugin
        .load(&request)
        .err()
        .unwrap()
        .to_string()
        .contains("lora"));
}

fn policy_variable_count(dir: &Path) -> usize {
    load(dir).vs.variables().len()
}

#[test]
fn the_same_seed_writes_the_same_weights() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_tiny(a.path(), 7).unwrap();
    write_tiny(b.path(), 7).unwrap();
    let bytes = |dir: &Path| std::fs::read(dir.join("model.safetensors")).unwrap();
    assert!(
        bytes(a.path()) == bytes(b.path()),
        "seed 7 wrote two different models"
    );
    let c = tempfile::tempdir().unwrap();
    write_tiny(c.path(), 8).unwrap();
    assert!(bytes(a.path()) != bytes(c.path()), "another seed, other weights");
}
