//! A policy loaded from a library takes the built-in's path: the Qwen2 decoder built as a
//! cdylib (`examples/qwen2-library`) gives the built-in's samples and log-probs exactly,
//! through the engine's cache it is lent; and a policy library built on sdk 1.3, whose model
//! keeps its own cache, still loads, generates and trains.

mod support;

use crpo_host::plugins::{Origin, PluginRegistry};
use crpo_host::rollout::sampling::SamplingConfig;
use crpo_host::rollout::Policy;
use support::plugin_dir;
use tch::{Device, Kind, Tensor};

fn load(registry: &PluginRegistry, plugin: &str, dir: &std::path::Path) -> Policy {
    Policy::load_with(
        registry,
        plugin,
        dir,
        Device::Cpu,
        Kind::Float,
        &serde_json::Value::Null,
    )
    .unwrap()
}

fn prompts(policy: &Policy) -> Vec<Vec<i64>> {
    let texts = [
        "The most likely diagnosis is",
        "The most likely diagnosis is",
        "Gout is",
        "Which?",
    ];
    texts
        .iter()
        .map(|t| policy.tokenizer.encode(t).unwrap())
        .collect()
}

#[test]
fn a_loaded_qwen2_gives_the_built_in_s_samples_and_log_probs_exactly() {
    let libraries = plugin_dir(&["qwen2_library"]);
    let registry = PluginRegistry::load(&[libraries.path().to_path_buf()]).unwrap();
    let loaded_plugin = registry.policy("qwen2-library").unwrap();
    assert!(matches!(loaded_plugin.origin, Origin::Library { .. }));
    assert!(loaded_plugin.plugin().presets().contains(&"tiny".to_string()));

    let model = tempfile::tempdir().unwrap();
    loaded_plugin
        .plugin()
        .write_preset("tiny", model.path(), 4)
        .unwrap();
    let built_in = load(&registry, "qwen2", model.path());
    let loaded = load(&registry, "qwen2-library", model.path());
    assert_eq!(built_in.model.cache_layout(), loaded.model.cache_layout());

    let prompts = prompts(&built_in);
    for sampling in [
        SamplingConfig {
            max_new_tokens: 24,
            greedy: true,
            ..SamplingConfig::default()
        },
        SamplingConfig {
            max_new_tokens: 24,
            temperature: 1.0,
            seed: 9,
            ..SamplingConfig::default()
        },
    ] {
        let (ours, our_stats) = built_in.generate(&prompts, &sampling).unwrap();
        let (theirs, their_stats) = loaded.generate(&prompts, &sampling).unwrap();
        assert_eq!(ours, theirs, "the same samples (greedy: {})", sampling.greedy);
        assert_eq!(our_stats, their_stats, "the same engine path");
    }

    let completions: Vec<Vec<i64>> = built_in
        .generate(&prompts, &SamplingConfig::default())
        .unwrap()
        .0
        .into_iter()
        .map(|c| c.ids)
        .collect();
    let ours = built_in.logprobs(&prompts, &completions, false).unwrap();
    let theirs = loaded.logprobs(&prompts, &completions, false).unwrap();
    assert!(
        ours.logprobs.equal(&theirs.logprobs),
        "the same log-probs, exactly"
    );
    assert!(ours.entropies.equal(&theirs.entropies));

    // Gradients reach the library's parameters through the same shared-prompt pass.
    ours.logprobs.sum(Kind::Float).backward();
    theirs.logprobs.sum(Kind::Float).backward();
    let grads =
        |policy: &Policy| -> Vec<Tensor> { policy.parameters().into_iter().map(|(_, p)| p.grad()).collect() };
    for (a, b) in grads(&built_in).iter().zip(grads(&loaded).iter()) {
        assert!(a.equal(b), "the same gradients");
    }
}

#[test]
fn a_policy_library_built_on_sdk_1_3_still_loads_generates_and_trains() {
    let libraries = plugin_dir(&["legacy_policy"]);
    let registry = PluginRegistry::load(&[libraries.path().to_path_buf()]).unwrap();
    let plugin = registry.policy("bigram-sdk-1.3").unwrap();
    assert!(matches!(&plugin.origin, Origin::Library { library, .. } if library == "legacy-policy 1.3.0"));
    // A bigram model over the tiny preset's tokenizer.
    let model = support::bigram_model_dir();
    let policy = load(&registry, "bigram-sdk-1.3", model.path());
    assert_eq!(
        policy.model.cache_layout(),
        None,
        "1.3 models keep their own cache"
    );

    let prompts = prompts(&policy);
    let sampling = SamplingConfig {
        max_new_tokens: 8,
        temperature: 1.0,
        seed: 3,
        ..SamplingConfig::default()
    };
    let (first, stats) = policy.generate(&prompts, &sampling).unwrap();
    let (second, _) = policy.generate(&prompts, &sampling).unwrap();
    assert_eq!(first, second);
    assert!(first.iter().all(|c| !c.ids.is_empty()));
    assert_eq!(
        stats.kv_cache_bytes, 0,
        "the engine holds no keys or values for it"
    );

    // A log-prob pass through the sdk's generic path, with gradients into the library's table.
    let completions: Vec<Vec<i64>> = first.into_iter().map(|c| c.ids).collect();
    let scored = policy.logprobs(&prompts, &completions, false).unwrap();
    assert!(scored.logprobs.requires_grad());
    scored.logprobs.sum(Kind::Float).backward();
    let (_, table) = policy.parameters().remove(0);
    assert!(table.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
}

#[test]
fn libraries_of_several_sdk_versions_load_together_in_any_order() {
    // One directory per library, named in both orders: an older library's check must not
    // disturb a newer one's, nor the other way round.
    let dirs = [
        plugin_dir(&["legacy_policy"]),
        plugin_dir(&["qwen2_library"]),
        plugin_dir(&["legacy_plugin"]),
    ];
    let paths: Vec<std::path::PathBuf> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
    for order in [[0, 1, 2], [1, 2, 0], [2, 0, 1]] {
        let ordered: Vec<std::path::PathBuf> = order.iter().map(|&i| paths[i].clone()).collect();
        let registry = PluginRegistry::load(&ordered).unwrap();
        for policy in ["bigram-sdk-1.3", "qwen2-library", "qwen2"] {
            assert!(registry.policy(policy).is_ok(), "{policy} in order {order:?}");
        }
        assert!(
            registry.reward("non_empty").is_ok(),
            "the sdk 1.0 reward plugin in order {order:?}"
        );
    }
}
