//! The model through the path users take: a Hugging Face directory (the tiny preset, written
//! by the project) loaded, run, saved and loaded again, and served through the sdk interface.
//! (Tokenizer, generation and log-prob passes are the host's engine: host/tests/rollout.rs.)

use crpo_plugins_policy::policy::Policy;
use crpo_plugins_policy::presets::write_tiny;
use crpo_policy_sdk::{KeyValues, KvCache};
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
    assert!(out.path().join("model.safetensors").exists());
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
    std::fs::write(broken.path().join("pytorch_model.bin"), b"pickle").unwrap();
    let err = Policy::load(broken.path(), Device::Cpu, Kind::Float)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("pytorch_model.bin") && err.contains("safe_serialization=True"),
        "{err}"
    );
}

#[test]
fn a_config_that_does_not_describe_the_weights_is_refused_before_anything_is_allocated() {
    let dir = tiny_dir();
    let path = dir.path().join("config.json");
    let original: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (key, value, expected) in [
        (
            "hidden_size",
            1u64 << 40,
            "config.json does not describe these weights",
        ),
        (
            "intermediate_size",
            1 << 62,
            "config.json does not describe these weights",
        ),
        (
            "num_hidden_layers",
            1_000_000_000,
            "config.json does not describe these weights",
        ),
        ("head_dim", 1 << 40, "config.json does not describe these weights"),
        (
            "num_attention_heads",
            1 << 40,
            "each head would have no dimensions",
        ),
        // Fewer layers than the weights hold: a layer would be dropped in silence.
        ("num_hidden_layers", 1, "of decoder layer 1"),
    ] {
        let mut config = original.clone();
        config[key] = value.into();
        if key == "num_attention_heads" {
            config["num_key_value_heads"] = value.into();
        }
        std::fs::write(&path, config.to_string()).unwrap();
        let err = Policy::load(dir.path(), Device::Cpu, Kind::Float)
            .err()
            .unwrap_or_else(|| panic!("{key} = {value} loaded"))
            .to_string();
        assert!(err.contains(expected), "{key} = {value}: {err}");
    }
}

#[test]
fn loads_in_bf16_with_logits_close_to_f32() {
    let dir = tiny_dir();
    let f32_policy = load(dir.path());
    let bf16_policy = Policy::load(dir.path(), Device::Cpu, Kind::BFloat16).unwrap();
    let ids = Tensor::from_slice(&[17i64, 230, 5, 901, 44, 12]).unsqueeze(0);
    let mask = ids.ones_like();
    let a = tch::no_grad(|| f32_policy.model.forward(&ids, &mask)).unwrap();
    let b = tch::no_grad(|| bf16_policy.model.forward(&ids, &mask))
        .unwrap()
        .to_kind(Kind::Float);
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
    use crpo_policy_sdk::{PolicyLoad, PolicyPlugin};
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
    let full = tch::no_grad(|| model.forward(&ids, &ones)).unwrap();
    // The engine's cache, allocated from the model's layout; each step returns the last
    // position's logits (all generation reads).
    let layout = model.cache_layout().unwrap();
    assert_eq!((layout.layers, layout.kv_heads, layout.head_dim), (2, 2, 16));
    let mut cache = KvCache::new(layout, 1, 5, Kind::Float, Device::Cpu);
    let head = tch::no_grad(|| model.forward_cached(&ids.narrow(1, 0, 3), &ones.narrow(1, 0, 3), &mut cache))
        .unwrap();
    let tail = tch::no_grad(|| model.forward_cached(&ids.narrow(1, 3, 2), &ones.narrow(1, 3, 2), &mut cache))
        .unwrap();
    assert_eq!(head.size(), vec![1, full.size()[2]]);
    let expected = Tensor::cat(&[full.select(1, 2), full.select(1, 4)], 0);
    let diff = (&expected - Tensor::cat(&[head, tail], 0))
        .abs()
        .max()
        .double_value(&[]);
    assert!(
        diff < 1e-4,
        "cached decoding through the plugin differs by {diff}"
    );
    assert_eq!(cache.len(), 5);
    let full_cache =
        tch::no_grad(|| model.forward_cached(&ids.narrow(1, 0, 1), &ones.narrow(1, 0, 1), &mut cache));
    assert!(full_cache.is_err(), "a full cache is an error, not a panic");

    // Parameters share storage with the model: a step on them changes its output.
    let parameters = model.parameters();
    assert_eq!(parameters.len(), policy_variable_count(dir.path()));
    tch::no_grad(|| {
        for (_, p) in &parameters {
            let _ = p.shallow_clone().fill_(0.01);
        }
    });
    let after = tch::no_grad(|| model.forward(&ids, &ones)).unwrap();
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
    assert!(Qwen2PolicyPlugin.presets().contains(&"tiny".to_string()));
    let unknown = Qwen2PolicyPlugin.write_preset("huge", dir.path(), 0).unwrap_err();
    assert!(unknown.to_string().contains("no preset `huge`"), "{unknown}");
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
