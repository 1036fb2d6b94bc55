//! LoRA adapters for any policy built on this sdk, in Hugging Face PEFT's terms, so adapters
//! move between crpo and PEFT unchanged: `adapter_config.json` (PEFT's `LoraConfig` fields)
//! and `adapter_model.safetensors` with PEFT's tensor names
//! (`base_model.model.<module>.lora_A.weight`, `[r, in]`; `lora_B`, `[out, r]`).
//!
//! A model wraps each targeted linear layer's output: `y = W·x + s·B·(A·dropout(x))`, with
//! `s = lora_alpha / r` (or `/ √r` under rsLoRA), `A` drawn as PEFT draws it and `B = 0`, so a
//! fresh adapter changes nothing. Every adapter of a model shares one switch: with adapters
//! off the model is its base, which is how CRPO's reference pass needs no second copy.

use crpo_sdk::{PluginError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// PEFT's file names in an adapter directory.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// Which linear layers get adapters: names (the module's last component, as PEFT matches
/// them: `q_proj`, …) or `"all-linear"` (every linear layer but the LM head).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    Names(Vec<String>),
    AllLinear(String),
}

impl Default for TargetModules {
    fn default() -> Self {
        TargetModules::AllLinear("all-linear".into())
    }
}

/// LoRA's settings, with PEFT's names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// The rank.
    pub r: usize,
    /// The scale's numerator: `s = lora_alpha / r` (rsLoRA: `/ √r`).
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    #[serde(default)]
    pub target_modules: TargetModules,
    #[serde(default)]
    pub use_rslora: bool,
    /// An adapter directory (PEFT's files) to start from instead of fresh adapters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<PathBuf>,
}

impl LoraConfig {
    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(PluginError::invalid_option("lora.r", "must be at least 1"));
        }
        if !self.lora_alpha.is_finite() || self.lora_alpha <= 0.0 {
            return Err(PluginError::invalid_option(
                "lora.lora_alpha",
                "must be a number > 0",
            ));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(PluginError::invalid_option(
                "lora.lora_dropout",
                "must be in [0, 1)",
            ));
        }
        match &self.target_modules {
            TargetModules::AllLinear(name) if name != "all-linear" => Err(PluginError::invalid_option(
                "lora.target_modules",
                format!("`{name}`: expected a list of module names or \"all-linear\""),
            )),
            TargetModules::Names(names) if names.is_empty() => Err(PluginError::invalid_option(
                "lora.target_modules",
                "names no module",
            )),
            _ => Ok(()),
        }
    }

    /// `s`: what the adapter's product is multiplied by.
    pub fn scale(&self) -> f64 {
        let r = self.r as f64;
        self.lora_alpha / if self.use_rslora { r.sqrt() } else { r }
    }

    /// Whether the linear layer at `module` (`model.layers.0.self_attn.q_proj`) gets an adapter.
    pub fn targets(&self, module: &str) -> bool {
        let last = module.rsplit('.').next().unwrap_or(module);
        match &self.target_modules {
            TargetModules::AllLinear(_) => last != "lm_head",
            TargetModules::Names(names) => names.iter().any(|name| name == last || name == module),
        }
    }

    /// PEFT's adapter_config.json for adapters over `base` (the base model's directory).
    pub fn peft_config(&self, base: &Path) -> serde_json::Value {
        let targets = match &self.target_modules {
            TargetModules::AllLinear(name) => serde_json::json!(name),
            TargetModules::Names(names) => serde_json::json!(names),
        };
        serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base.to_string_lossy(),
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "target_modules": targets,
            "use_rslora": self.use_rslora,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "modules_to_save": null,
        })
    }
}

/// An adapter directory's settings and base model, from its adapter_config.json.
pub fn read_adapter_config(dir: &Path) -> Result<(LoraConfig, PathBuf)> {
    let path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| PluginError::failed(format!("cannot read {}: {e}", path.display())))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| PluginError::failed(format!("{} is not valid JSON: {e}", path.display())))?;
    let field = |key: &str| {
        json.get(key)
            .cloned()
            .ok_or_else(|| PluginError::failed(format!("{}: no `{key}`", path.display())))
    };
    if json.get("peft_type").and_then(|t| t.as_str()) != Some("LORA") {
        return Err(PluginError::failed(format!(
            "{}: not a LoRA adapter (peft_type is {})",
            path.display(),
            json.get("peft_type").unwrap_or(&serde_json::Value::Null)
        )));
    }
    fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value, key: &str, path: &Path) -> Result<T> {
        serde_json::from_value(value)
            .map_err(|e| PluginError::failed(format!("{}: `{key}`: {e}", path.display())))
    }
    let config = LoraConfig {
        r: parse(field("r")?, "r", &path)?,
        lora_alpha: parse(field("lora_alpha")?, "lora_alpha", &path)?,
        lora_dropout: json.get("lora_dropout").and_then(|v| v.as_f64()).unwrap_or(0.0),
        target_modules: parse(field("target_modules")?, "target_modules", &path)?,
        use_rslora: json.get("use_rslora").and_then(|v| v.as_bool()).unwrap_or(false),
        adapter: Some(dir.to_path_buf()),
    };
    config.validate()?;
    let base = json
        .get("base_model_name_or_path")
        .and_then(|v| v.as_str())
        .map(PathBuf::from)
        .ok_or_else(|| PluginError::failed(format!("{}: no `base_model_name_or_path`", path.display())))?;
    Ok((config, base))
}

/// PEFT's name of an adapter matrix: `which` is `lora_A` or `lora_B`.
pub fn peft_name(module: &str, which: &str) -> String {
    format!("base_model.model.{module}.{which}.weight")
}

/// The adapter of one linear layer `in → out`.
#[derive(Debug)]
pub struct LoraAdapter {
    /// `[r, in]`.
    pub a: Tensor,
    /// `[out, r]`.
    pub b: Tensor,
    scale: f64,
    dropout: f64,
    enabled: Arc<AtomicBool>,
}

impl LoraAdapter {
    /// A fresh adapter as PEFT makes one: `A` uniform in ±1/√in (kaiming-uniform with a = √5,
    /// nn.Linear's), `B` zero; trainable, in `kind` on `device`.
    pub fn fresh(
        inputs: i64,
        outputs: i64,
        config: &LoraConfig,
        (kind, device): (Kind, Device),
        enabled: Arc<AtomicBool>,
    ) -> Self {
        let bound = 1.0 / (inputs as f64).sqrt();
        let r = config.r as i64;
        let a = (Tensor::rand([r, inputs], (Kind::Float, device)) * (2.0 * bound) - bound).to_kind(kind);
        let b = Tensor::zeros([outputs, r], (kind, device));
        LoraAdapter {
            a: a.set_requires_grad(true),
            b: b.set_requires_grad(true),
            scale: config.scale(),
            dropout: config.lora_dropout,
            enabled,
        }
    }

    /// What the adapter adds to the layer's output for input `xs` (`None` while adapters are
    /// off). Dropout applies to passes with grad only, as PEFT's train mode.
    pub fn delta(&self, xs: &Tensor) -> Option<Tensor> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        let xs = if self.dropout > 0.0 {
            xs.dropout(self.dropout, crpo_torch_ext::grad_enabled())
        } else {
            xs.shallow_clone()
        };
        Some(xs.matmul(&self.a.tr()).matmul(&self.b.tr()) * self.scale)
    }

    /// The same adapter over the same tensors (a checkpointed layer keeps one for its backward).
    pub fn shallow_clone(&self) -> Self {
        LoraAdapter {
            a: self.a.shallow_clone(),
            b: self.b.shallow_clone(),
            scale: self.scale,
            dropout: self.dropout,
            enabled: self.enabled.clone(),
        }
    }
}

/// Reads an adapter directory's matrices by PEFT name.
pub fn read_adapter_weights(dir: &Path) -> Result<Vec<(String, Tensor)>> {
    let path = dir.join(ADAPTER_WEIGHTS);
    Tensor::read_safetensors(&path)
        .map_err(|e| PluginError::failed(format!("cannot read {}: {e}", path.display())))
}

/// Writes `adapters` (PEFT names) and the config over `base` as an adapter directory `dir`.
pub fn write_adapter(
    dir: &Path,
    config: &LoraConfig,
    base: &Path,
    adapters: &[(String, Tensor)],
) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| PluginError::failed(format!("cannot create {}: {e}", dir.display())))?;
    let config_path = dir.join(ADAPTER_CONFIG);
    let json = serde_json::to_string_pretty(&config.peft_config(base))
        .map_err(|e| PluginError::failed(e.to_string()))?;
    std::fs::write(&config_path, json)
        .map_err(|e| PluginError::failed(format!("cannot write {}: {e}", config_path.display())))?;
    let tensors: Vec<(String, Tensor)> = adapters
        .iter()
        .map(|(name, t)| (name.clone(), t.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    let path = dir.join(ADAPTER_WEIGHTS);
    Tensor::write_safetensors(&tensors, &path)
        .map_err(|e| PluginError::failed(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(targets: TargetModules) -> LoraConfig {
        LoraConfig {
            r: 4,
            lora_alpha: 8.0,
            lora_dropout: 0.0,
            target_modules: targets,
            use_rslora: false,
            adapter: None,
        }
    }

    #[test]
    fn targets_match_peft_s_suffix_rule_and_all_linear_skips_the_head() {
        let named = config(TargetModules::Names(vec!["q_proj".into(), "down_proj".into()]));
        assert!(named.targets("model.layers.3.self_attn.q_proj"));
        assert!(!named.targets("model.layers.3.self_attn.k_proj"));
        let all = config(TargetModules::default());
        assert!(all.targets("model.layers.0.mlp.up_proj") && !all.targets("lm_head"));
    }

    #[test]
    fn scale_by_hand() {
        assert_eq!(config(TargetModules::default()).scale(), 2.0);
        let rs = LoraConfig {
            use_rslora: true,
            ..config(TargetModules::default())
        };
        assert_eq!(rs.scale(), 4.0, "8 / √4");
    }

    #[test]
    fn a_fresh_adapter_adds_nothing_and_off_adds_nothing_either() {
        let on = Arc::new(AtomicBool::new(true));
        let adapter = LoraAdapter::fresh(
            6,
            5,
            &config(TargetModules::default()),
            (Kind::Float, Device::Cpu),
            on.clone(),
        );
        let xs = Tensor::randn([2, 6], (Kind::Float, Device::Cpu));
        let delta = adapter.delta(&xs).unwrap();
        assert_eq!(delta.size(), vec![2, 5]);
        assert_eq!(
            delta.abs().sum(Kind::Float).double_value(&[]),
            0.0,
            "B starts at zero"
        );
        // B = 1: delta = s · (x·Aᵀ)·1.
        let _ = tch::no_grad(|| adapter.b.shallow_clone().fill_(1.0));
        let expected = xs.matmul(&adapter.a.tr()).sum_dim_intlist(-1, true, Kind::Float) * 2.0;
        let delta = adapter.delta(&xs).unwrap();
        assert!((delta.narrow(1, 0, 1) - expected).abs().max().double_value(&[]) < 1e-5);
        on.store(false, Ordering::Relaxed);
        assert!(adapter.delta(&xs).is_none());
    }

    #[test]
    fn an_adapter_directory_round_trips_with_peft_s_config() {
        let dir = tempfile::tempdir().unwrap();
        let lora = config(TargetModules::Names(vec!["q_proj".into()]));
        let weights = vec![(
            peft_name("model.layers.0.self_attn.q_proj", "lora_A"),
            Tensor::ones([4, 6], (Kind::Float, Device::Cpu)),
        )];
        write_adapter(dir.path(), &lora, Path::new("/models/base"), &weights).unwrap();
        let (read, base) = read_adapter_config(dir.path()).unwrap();
        assert_eq!(base, PathBuf::from("/models/base"));
        assert_eq!(
            (read.r, read.lora_alpha, read.target_modules),
            (4, 8.0, lora.target_modules)
        );
        let tensors = read_adapter_weights(dir.path()).unwrap();
        assert_eq!(
            tensors[0].0,
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
        );
        std::fs::write(
            dir.path().join(ADAPTER_CONFIG),
            r#"{"peft_type": "PREFIX_TUNING"}"#,
        )
        .unwrap();
        let error = read_adapter_config(dir.path()).unwrap_err().to_string();
        assert!(error.contains("not a LoRA adapter"), "{error}");
    }
}
