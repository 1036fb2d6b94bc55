//! `algorithm.gradient_checkpointing`: the policy's log-prob pass keeps each decoder layer's
//! input only and recomputes the layer in the backward. The gradients are those of the plain
//! pass — for the built-in decoder and for the same decoder loaded from a library — and a
//! policy library built before the option refuses it with a clear message.

mod support;

use crpo_host::plugins::PluginRegistry;
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

/// Gradients of a weighted sum of the completions' log-probs (two groups sharing prompts,
/// completions of different lengths), by parameter name.
fn gradients(policy: &Policy) -> Vec<(String, Tensor)> {
    let prompts = vec![vec![5i64, 6, 7], vec![5, 6, 7], vec![9, 10], vec![9, 10]];
    let completions = vec![
        vec![11i64, 12, 13, 14],
        vec![15],
        vec![16, 17],
        vec![18, 19, 20, 21, 22, 23],
    ];
    for (_, parameter) in policy.parameters() {
        let mut grad = parameter.grad();
        if grad.defined() {
            let _ = grad.zero_();
        }
    }
    let scored = policy.logprobs(&prompts, &completions, false).unwrap();
    let weights = Tensor::from_slice(&[1.0f32, -0.5, 2.0, -1.5]).unsqueeze(1);
    (scored.logprobs * weights).sum(Kind::Float).backward();
    policy
        .parameters()
        .into_iter()
        .map(|(name, parameter)| (name, parameter.grad().copy()))
        .collect()
}

fn assert_same_gradients(plain: &[(String, Tensor)], checkpointed: &[(String, Tensor)]) {
    assert_eq!(plain.len(), checkpointed.len());
    let mut nonzero = 0;
    for ((name, a), (other, b)) in plain.iter().zip(checkpointed) {
        assert_eq!(name, other);
        let scale = a.abs().max().double_value(&[]).max(1e-12);
        let difference = (a - b).abs().max().double_value(&[]);
        assert!(
            difference <= 1e-5 * scale,
            "{name}: differs by {difference} (scale {scale})"
        );
        nonzero += usize::from(scale > 1e-9);
    }
    assert!(nonzero > plain.len() / 2, "most parameters get a gradient");
}

#[test]
fn checkpointed_passes_give_the_plain_gradients_built_in_and_loaded() {
    let libraries = plugin_dir(&["qwen2_library"]);
    let registry = PluginRegistry::load(&[libraries.path().to_path_buf()]).unwrap();
    let model = tempfile::tempdir().unwrap();
    crpo_plugins_policy::presets::write_tiny(model.path(), 2).unwrap();
    for plugin in ["qwen2", "qwen2-library"] {
        let policy = load(&registry, plugin, model.path());
        let plain = gradients(&policy);
        policy
            .set_gradient_checkpointing("algorithm.gradient_checkpointing", true)
            .unwrap();
        let checkpointed = gradients(&policy);
        assert_same_gradients(&plain, &checkpointed);
        // A pass without grad (the reference's, the old policy's) runs plainly.
        let _guard = tch::no_grad_guard();
        let scored = policy.logprobs(&[vec![5, 6]], &[vec![7, 8]], false).unwrap();
        assert!(!scored.logprobs.requires_grad());
    }
}

/// LoRA: the embeddings are frozen, so no layer's input requires grad; the adapters still get
/// the plain pass's gradients (the bench's LoRA + checkpointing step once failed here).
#[test]
fn lora_adapters_get_the_plain_gradients_under_checkpointing() {
    let model = tempfile::tempdir().unwrap();
    crpo_plugins_policy::presets::write_tiny(model.path(), 2).unwrap();
    let options = serde_json::json!({"lora": {"r": 4, "lora_alpha": 8.0, "target_modules": "all-linear"}});
    let policy = Policy::load_with(
        &PluginRegistry::builtin_only(),
        "qwen2",
        model.path(),
        Device::Cpu,
        Kind::Float,
        &options,
    )
    .unwrap();
    // B starts at zero (PEFT's initialisation): give it values so that A's gradients are not.
    tch::manual_seed(7);
    tch::no_grad(|| {
        for (name, parameter) in policy.parameters() {
            if name.contains("lora_B") {
                parameter
                    .shallow_clone()
                    .copy_(&(Tensor::randn_like(&parameter) * 0.5));
            }
        }
    });
    let plain = gradients(&policy);
    policy
        .set_gradient_checkpointing("algorithm.gradient_checkpointing", true)
        .unwrap();
    assert_same_gradients(&plain, &gradients(&policy));
}

#[test]
fn a_policy_library_built_before_the_option_refuses_it() {
    let libraries = plugin_dir(&["legacy_policy"]);
    let registry = PluginRegistry::load(&[libraries.path().to_path_buf()]).unwrap();
    let model = support::bigram_model_dir();
    let policy = load(&registry, "bigram-sdk-1.3", model.path());
    let error = format!(
        "{:#}",
        policy
            .set_gradient_checkpointing("algorithm.gradient_checkpointing", true)
            .unwrap_err()
    );
    assert!(error.contains("algorithm.gradient_checkpointing"), "{error}");
    assert!(error.contains("rebuild it against the current sdk"), "{error}");
}
