//! `adapter_config.json`, PEFT's `LoraConfig` on disk: written so `peft.PeftModel.from_pretrained`
//! places and scales crpo's adapters as crpo does, read so PEFT's adapters load in crpo the same
//! way. A PEFT feature crpo does not implement (DoRA, trained biases, whole modules saved beside
//! the adapters, …) is refused by name rather than loaded without it.

use super::selection::{ExcludedModules, LayerIndices, LayersPattern, TargetModules};
use super::{LoraConfig, ADAPTER_CONFIG};
use crpo_sdk::{PluginError, Result};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The fields of PEFT's file crpo reads. Parsed from the text itself (not through a
/// `serde_json::Value`, whose maps are sorted) so the patterns keep the file's order.
#[derive(Debug, Deserialize)]
struct PeftAdapterConfig {
    base_model_name_or_path: Option<String>,
    r: Option<usize>,
    lora_alpha: Option<f64>,
    lora_dropout: Option<f64>,
    target_modules: Option<TargetModules>,
    use_rslora: Option<bool>,
    exclude_modules: Option<ExcludedModules>,
    layers_to_transform: Option<LayerIndices>,
    layers_pattern: Option<LayersPattern>,
    rank_pattern: Option<IndexMap<String, usize>>,
    alpha_pattern: Option<IndexMap<String, f64>>,
}

/// The file crpo writes: its settings, and PEFT's defaults for what crpo does not implement,
/// stated so no reader guesses.
#[derive(Serialize)]
struct PeftAdapterFile<'a> {
    peft_type: &'static str,
    task_type: &'static str,
    base_model_name_or_path: String,
    r: usize,
    lora_alpha: f64,
    lora_dropout: f64,
    target_modules: &'a TargetModules,
    use_rslora: bool,
    exclude_modules: &'a Option<ExcludedModules>,
    layers_to_transform: &'a Option<LayerIndices>,
    layers_pattern: &'a Option<LayersPattern>,
    rank_pattern: &'a IndexMap<String, usize>,
    alpha_pattern: &'a IndexMap<String, f64>,
    bias: &'static str,
    fan_in_fan_out: bool,
    use_dora: bool,
    inference_mode: bool,
    init_lora_weights: bool,
    modules_to_save: Option<Vec<String>>,
}

/// PEFT settings that change what an adapter computes and that crpo does not implement: an
/// adapter with any of them set (not null, false, empty or `"none"`) is refused.
const UNSUPPORTED: [(&str, &str); 15] = [
    ("use_dora", "DoRA's magnitude vectors"),
    ("bias", "trained biases"),
    ("lora_bias", "a bias on lora_B"),
    ("modules_to_save", "whole modules trained beside the adapters"),
    ("fan_in_fan_out", "transposed (Conv1D) weights"),
    ("layer_replication", "replicated layers"),
    ("target_parameters", "adapters on parameters"),
    ("trainable_token_indices", "trained token embeddings"),
    ("use_qalora", "QALoRA's pooled inputs"),
    ("alora_invocation_tokens", "activated LoRA"),
    ("arrow_config", "Arrow's routing"),
    ("use_bdlora", "block-diagonal LoRA"),
    ("kasa_config", "KaSA's singular-value adapters"),
    ("velora_config", "VeLoRA's compressed activations"),
    ("monteclora_config", "MonteCLoRA's sampled adapters"),
];

/// `init_lora_weights` values whose adapter applies to the base model as it is. The others
/// (PiSSA, OLoRA, CorDA, LoftQ) make PEFT rewrite the base weights when it loads the adapter,
/// so B·A over the unchanged base would be another model.
const BASE_KEEPING_INITS: [&str; 3] = ["gaussian", "eva", "orthogonal"];

/// PEFT's `init_lora_weights` values that rewrite the base weights when an adapter loads.
fn rewrites_the_base(init: &str) -> bool {
    matches!(init, "pissa" | "olora" | "corda" | "loftq" | "lora_ga")
        || init
            .strip_prefix("pissa_niter_")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn is_set(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null | serde_json::Value::Bool(false) => false,
        serde_json::Value::Array(items) => !items.is_empty(),
        serde_json::Value::Object(fields) => !fields.is_empty(),
        serde_json::Value::String(text) => text != "none",
        _ => true,
    }
}

impl LoraConfig {
    /// PEFT's adapter_config.json for adapters over `base` (the base model's directory).
    pub fn peft_config(&self, base: &Path) -> Result<String> {
        let file = PeftAdapterFile {
            peft_type: "LORA",
            task_type: "CAUSAL_LM",
            base_model_name_or_path: base.to_string_lossy().into_owned(),
            r: self.r,
            lora_alpha: self.lora_alpha,
            lora_dropout: self.lora_dropout,
            target_modules: &self.target_modules,
            use_rslora: self.use_rslora,
            exclude_modules: &self.exclude_modules,
            layers_to_transform: &self.layers_to_transform,
            layers_pattern: &self.layers_pattern,
            rank_pattern: &self.rank_pattern,
            alpha_pattern: &self.alpha_pattern,
            bias: "none",
            fan_in_fan_out: false,
            use_dora: false,
            inference_mode: true,
            init_lora_weights: true,
            modules_to_save: None,
        };
        serde_json::to_string_pretty(&file)
            .map_err(|e| PluginError::failed(format!("cannot write {ADAPTER_CONFIG}: {e}")))
    }
}

/// An adapter directory's settings and base model, from its adapter_config.json.
pub fn read_adapter_config(dir: &Path) -> Result<(LoraConfig, PathBuf)> {
    let path = dir.join(ADAPTER_CONFIG);
    let failed = |message: String| PluginError::failed(format!("{}: {message}", path.display()));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| PluginError::failed(format!("cannot read {}: {e}", path.display())))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| failed(format!("not valid JSON: {e}")))?;
    if json.get("peft_type").and_then(|t| t.as_str()) != Some("LORA") {
        return Err(failed(format!(
            "not a LoRA adapter (peft_type is {})",
            json.get("peft_type").unwrap_or(&serde_json::Value::Null)
        )));
    }
    for (key, what) in UNSUPPORTED {
        if let Some(value) = json.get(key).filter(|value| is_set(value)) {
            return Err(failed(format!(
                "`{key}` is {value}: this adapter uses {what}, which crpo does not implement (it loads plain LoRA adapters)"
            )));
        }
    }
    match json.get("init_lora_weights") {
        None | Some(serde_json::Value::Null | serde_json::Value::Bool(_)) => {}
        Some(serde_json::Value::String(init)) if BASE_KEEPING_INITS.contains(&init.as_str()) => {}
        Some(serde_json::Value::String(init)) if !rewrites_the_base(init) => {
            return Err(failed(format!(
                "`init_lora_weights` is \"{init}\", which PEFT does not know (true, false, \"gaussian\", \"eva\", \"orthogonal\", or the base-rewriting \"pissa\", \"pissa_niter_N\", \"olora\", \"corda\", \"loftq\", \"lora_ga\")"
            )))
        }
        Some(other @ serde_json::Value::String(_)) => {
            return Err(failed(format!(
                "`init_lora_weights` is {other}: PEFT rewrites the base model's weights when it loads such an adapter (PiSSA, OLoRA, CorDA, LoftQ), which crpo does not do, so it would compute another model; save it as a plain LoRA adapter (PEFT's `path_initial_model_for_weight_conversion`) or merge it with PEFT"
            )))
        }
        Some(other) => {
            return Err(failed(format!(
                "`init_lora_weights` is {other}, which PEFT does not know: true, false or the name of an init (\"gaussian\", \"eva\", \"orthogonal\", …)"
            )))
        }
    }
    let file: PeftAdapterConfig = serde_json::from_str(&text).map_err(|e| failed(e.to_string()))?;
    if let Some(targets) = &file.target_modules {
        if let Some(module) = targets.unsupported() {
            return Err(failed(format!(
                "`target_modules` adapts `{module}`: crpo implements LoRA on linear layers, not on the embedding or the LM head"
            )));
        }
    }
    let required = |key: &str| failed(format!("no `{key}`"));
    let config = LoraConfig {
        r: file.r.ok_or_else(|| required("r"))?,
        lora_alpha: file.lora_alpha.ok_or_else(|| required("lora_alpha"))?,
        lora_dropout: file.lora_dropout.unwrap_or(0.0),
        target_modules: file.target_modules.ok_or_else(|| required("target_modules"))?,
        use_rslora: file.use_rslora.unwrap_or(false),
        exclude_modules: file.exclude_modules,
        layers_to_transform: file.layers_to_transform,
        layers_pattern: file.layers_pattern,
        rank_pattern: file.rank_pattern.unwrap_or_default(),
        alpha_pattern: file.alpha_pattern.unwrap_or_default(),
        adapter: Some(dir.to_path_buf()),
        task_type: None,
        bias: None,
    };
    config.validate().map_err(|e| failed(e.to_string()))?;
    let base = file
        .base_model_name_or_path
        .map(PathBuf::from)
        .ok_or_else(|| required("base_model_name_or_path"))?;
    Ok((config, base))
}

#[cfg(test)]
mod tests {
    use super::super::{peft_name, read_adapter_weights, write_adapter};
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn an_adapter_directory_round_trips_with_peft_s_config_patterns_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut lora = LoraConfig {
            target_modules: TargetModules::Names(vec!["q_proj".into(), "up_proj".into()]),
            layers_to_transform: Some(LayerIndices::Many(vec![1, 0])),
            exclude_modules: Some(ExcludedModules::Pattern(r".*\.7\..*".into())),
            ..LoraConfig::new(4, 8.0)
        };
        // Not sorted: the first key that matches a layer gives its rank.
        lora.rank_pattern.insert("up_proj".into(), 2);
        lora.rank_pattern.insert(r"layers\.1\.mlp\.up_proj".into(), 3);
        lora.alpha_pattern.insert("q_proj".into(), 5.0);
        let weights = vec![(
            peft_name("model.layers.0.self_attn.q_proj", "lora_A"),
            Tensor::ones([4, 6], (Kind::Float, Device::Cpu)),
        )];
        write_adapter(dir.path(), &lora, Path::new("/models/base"), &weights).unwrap();
        let (read, base) = read_adapter_config(dir.path()).unwrap();
        assert_eq!(base, PathBuf::from("/models/base"));
        assert_eq!(
            read,
            LoraConfig {
                adapter: Some(dir.path().to_path_buf()),
                ..lora
            }
        );
        assert_eq!(read.rank_pattern.keys().next().unwrap(), "up_proj");
        let tensors = read_adapter_weights(dir.path()).unwrap();
        assert_eq!(
            tensors[0].0,
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
        );
    }

    fn read_with(dir: &Path, fields: &str) -> String {
        let text = format!(
            r#"{{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"],
                "base_model_name_or_path": "/b", "bias": "none", "use_dora": false,
                "modules_to_save": null, "loftq_config": {{}}, "megatron_core": "megatron.core"{fields}}}"#
        );
        std::fs::write(dir.join(ADAPTER_CONFIG), text).unwrap();
        match read_adapter_config(dir) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn what_crpo_does_not_implement_is_refused_by_name_and_defaults_are_not() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_with(dir.path(), ""), "", "PEFT's defaults load");
        for (field, key) in [
            (r#", "use_dora": true"#, "use_dora"),
            (r#", "bias": "lora_only""#, "bias"),
            (r#", "modules_to_save": ["lm_head"]"#, "modules_to_save"),
            (r#", "fan_in_fan_out": true"#, "fan_in_fan_out"),
            (r#", "layer_replication": [[0, 2]]"#, "layer_replication"),
        ] {
            let error = read_with(dir.path(), field);
            assert!(
                error.contains(ADAPTER_CONFIG) && error.contains(&format!("`{key}`")),
                "{error}"
            );
        }
        let error = read_with(dir.path(), r#", "rank_pattern": {"q_proj": 0}"#);
        assert!(error.contains("lora.rank_pattern"), "{error}");
        std::fs::write(
            dir.path().join(ADAPTER_CONFIG),
            r#"{"peft_type": "LORA", "r": "four", "lora_alpha": 8, "target_modules": ["q_proj"]}"#,
        )
        .unwrap();
        let error = read_adapter_config(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains(ADAPTER_CONFIG) && error.contains("line 1"),
            "{error}"
        );
        std::fs::write(
            dir.path().join(ADAPTER_CONFIG),
            r#"{"peft_type": "PREFIX_TUNING"}"#,
        )
        .unwrap();
        let error = read_adapter_config(dir.path()).unwrap_err().to_string();
        assert!(error.contains("not a LoRA adapter"), "{error}");
    }

    #[test]
    fn adapters_over_a_rewritten_base_or_on_the_embedding_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for init in ["true", "false", r#""gaussian""#, r#""eva""#, r#""orthogonal""#] {
            let field = format!(r#", "init_lora_weights": {init}"#);
            assert_eq!(read_with(dir.path(), &field), "", "{init} keeps the base");
        }
        for init in [
            r#""pissa""#,
            r#""pissa_niter_16""#,
            r#""olora""#,
            r#""corda""#,
            r#""loftq""#,
            r#""lora_ga""#,
        ] {
            let error = read_with(dir.path(), &format!(r#", "init_lora_weights": {init}"#));
            assert!(
                error.contains("`init_lora_weights`") && error.contains("rewrites the base"),
                "{error}"
            );
        }
        for init in [r#""bogus""#, r#""pissa_niter_""#, "3"] {
            let error = read_with(dir.path(), &format!(r#", "init_lora_weights": {init}"#));
            assert!(
                error.contains("which PEFT does not know") && !error.contains("rewrites"),
                "{init}: {error}"
            );
        }
        for key in ["kasa_config", "velora_config", "monteclora_config"] {
            let error = read_with(dir.path(), &format!(r#", "{key}": {{"a": 1}}"#));
            assert!(error.contains(&format!("`{key}`")), "{error}");
        }
        let with_targets = |targets: &str| {
            let text = format!(
                r#"{{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": {targets}, "base_model_name_or_path": "/b"}}"#
            );
            std::fs::write(dir.path().join(ADAPTER_CONFIG), text).unwrap();
            read_adapter_config(dir.path()).err().map(|e| e.to_string())
        };
        for targets in [
            r#"["q_proj", "embed_tokens"]"#,
            r#"["lm_head"]"#,
            r#"".*embed_tokens""#,
        ] {
            let error = with_targets(targets).unwrap_or_default();
            assert!(error.contains("`target_modules` adapts"), "{targets}: {error}");
        }
        for targets in [
            r#""all-linear""#,
            r#"["q_proj", "down_proj"]"#,
            r#"".*\\.(q|v)_proj""#,
        ] {
            assert_eq!(with_targets(targets), None, "{targets}");
        }
    }
}
