//! LoRA adapters for any policy built on this sdk, in Hugging Face PEFT's terms, so adapters
//! move between crpo and PEFT unchanged: `adapter_config.json` (PEFT's `LoraConfig` fields)
//! and `adapter_model.safetensors` with PEFT's tensor names
//! (`base_model.model.<module>.lora_A.weight`, `[r, in]`; `lora_B`, `[out, r]`).
//!
//! A model wraps each targeted linear layer's output: `y = W·x + s·B·(A·dropout(x))`, with
//! `s = lora_alpha / r` (or `/ √r` under rsLoRA), `A` drawn as PEFT draws it and `B = 0`, so a
//! fresh adapter changes nothing. Every adapter of a model shares one switch: with adapters
//! off the model is its base, which is how CRPO's reference pass needs no second copy.

mod adapter_config;
pub mod selection;

pub use adapter_config::read_adapter_config;
pub use selection::{ExcludedModules, LayerIndices, LayersPattern, TargetModules};

use crpo_sdk::{PluginError, Result};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

fn peft_default_r() -> usize {
    8
}

fn peft_default_alpha() -> f64 {
    8.0
}

/// PEFT's file names in an adapter directory.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// LoRA's settings, with PEFT's names (see [`selection`] for which layers and ranks they give).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// The rank (PEFT's default: 8).
    #[serde(default = "peft_default_r")]
    pub r: usize,
    /// The scale's numerator: `s = lora_alpha / r` (rsLoRA: `/ √r`; PEFT's default: 8).
    #[serde(default = "peft_default_alpha")]
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    #[serde(default)]
    pub target_modules: TargetModules,
    #[serde(default)]
    pub use_rslora: bool,
    /// Layers taken out of `target_modules`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_modules: Option<ExcludedModules>,
    /// Only the decoder layers of these indices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers_to_transform: Option<LayerIndices>,
    /// The module list holding the decoder layers, for `layers_to_transform`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers_pattern: Option<LayersPattern>,
    /// Ranks other than `r`, by a pattern ending the module's name (in order: the first wins).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub rank_pattern: IndexMap<String, usize>,
    /// Alphas other than `lora_alpha`, the same way.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub alpha_pattern: IndexMap<String, f64>,
    /// An adapter directory (PEFT's files) to start from instead of fresh adapters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<PathBuf>,
    /// PEFT's boilerplate, taken as written from a LoraConfig: only `"CAUSAL_LM"` (what
    /// crpo trains, and what it writes to adapter_config.json). Checked, never written on:
    /// a policy plugin built on an earlier sdk refuses keys it does not know.
    #[serde(default, skip_serializing)]
    pub task_type: Option<String>,
    /// Likewise: only `"none"` (crpo's adapters train no biases).
    #[serde(default, skip_serializing)]
    pub bias: Option<String>,
}

impl LoraConfig {
    /// Rank `r` and `lora_alpha` on every linear layer, PEFT's defaults otherwise.
    pub fn new(r: usize, lora_alpha: f64) -> Self {
        LoraConfig {
            r,
            lora_alpha,
            lora_dropout: 0.0,
            target_modules: TargetModules::default(),
            use_rslora: false,
            exclude_modules: None,
            layers_to_transform: None,
            layers_pattern: None,
            rank_pattern: IndexMap::new(),
            alpha_pattern: IndexMap::new(),
            adapter: None,
            task_type: None,
            bias: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.r == 0 || self.r > MAX_RANK {
            return Err(PluginError::invalid_option(
                "lora.r",
                format!("must be from 1 to {MAX_RANK} (it is {})", self.r),
            ));
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
        if let Some(task) = self.task_type.as_deref().filter(|&t| t != "CAUSAL_LM") {
            return Err(PluginError::invalid_option(
                "lora.task_type",
                format!("is `{task}`: crpo trains causal language models (\"CAUSAL_LM\"), or leave it out"),
            ));
        }
        if let Some(bias) = self.bias.as_deref().filter(|&b| b != "none") {
            return Err(PluginError::invalid_option(
                "lora.bias",
                format!("is `{bias}`: crpo's adapters train no biases (\"none\", PEFT's default), or leave it out"),
            ));
        }
        if let Some(module) = self.target_modules.unsupported() {
            return Err(PluginError::invalid_option(
                "lora.target_modules",
                format!("adapts `{module}`: crpo implements LoRA on the decoder's linear layers, not on the embedding or the LM head (as PEFT would); leave it out"),
            ));
        }
        self.validate_selection()
    }
}

/// The highest rank an adapter may have: far above any layer's width (a rank above a layer's
/// inputs or outputs adds nothing), low enough that its matrices can be allocated.
pub const MAX_RANK: usize = 1 << 16;

/// PEFT's name of an adapter matrix: `which` is `lora_A` or `lora_B`.
pub fn peft_name(module: &str, which: &str) -> String {
    format!("base_model.model.{module}.{which}.weight")
}

/// The module and matrix (`lora_A` or `lora_B`) a PEFT name names: [`peft_name`]'s inverse.
pub fn module_of(name: &str) -> Option<(&str, &str)> {
    let matrix = name.strip_prefix("base_model.model.")?.strip_suffix(".weight")?;
    ["lora_A", "lora_B"].into_iter().find_map(|which| {
        let module = matrix.strip_suffix(which)?.strip_suffix('.')?;
        Some((module, which))
    })
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
    /// A fresh adapter for the layer named `module` (its rank and scale by `config`) as PEFT
    /// makes one: `A` uniform in ±1/√in (kaiming-uniform with a = √5, nn.Linear's), `B` zero;
    /// trainable, in `kind` on `device`.
    pub fn fresh(
        module: &str,
        (inputs, outputs): (i64, i64),
        config: &LoraConfig,
        (kind, device): (Kind, Device),
        enabled: Arc<AtomicBool>,
    ) -> Self {
        let bound = 1.0 / (inputs as f64).sqrt();
        let r = config.rank_for(module) as i64;
        let a = (Tensor::rand([r, inputs], (Kind::Float, device)) * (2.0 * bound) - bound).to_kind(kind);
        let b = Tensor::zeros([outputs, r], (kind, device));
        LoraAdapter {
            a: a.set_requires_grad(true),
            b: b.set_requires_grad(true),
            scale: config.scale_for(module),
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
    let pickled = dir.join("adapter_model.bin");
    if !path.exists() && pickled.exists() {
        return Err(PluginError::failed(format!(
            "{} holds adapter_model.bin, which crpo does not read (a pickle): save the adapter with PEFT's save_pretrained(dir, safe_serialization=True) to write {ADAPTER_WEIGHTS}",
            dir.display()
        )));
    }
    let tensors = crate::tensor::read_safetensors_file(&path).map_err(PluginError::failed)?;
    for (name, tensor) in &tensors {
        check_adapter_matrix(&path, name, tensor)?;
    }
    Ok(tensors)
}

/// An adapter matrix must hold finite floating-point numbers: integers would be truncated
/// into the model, and NaN would spread through every pass (and be blamed on the base).
pub fn check_adapter_matrix(file: &Path, name: &str, tensor: &Tensor) -> Result<()> {
    if !tensor.is_floating_point() {
        return Err(PluginError::failed(format!(
            "{}: `{name}` holds {:?}, not floating-point numbers",
            file.display(),
            tensor.kind()
        )));
    }
    let finite = crate::tensor::all_finite(tensor)
        .map_err(|e| PluginError::failed(format!("cannot check `{name}` of {}: {e}", file.display())))?;
    if !finite {
        return Err(PluginError::failed(format!(
            "{}: `{name}` holds NaN or infinite values: the adapter diverged in training or its file is damaged",
            file.display()
        )));
    }
    Ok(())
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
    let json = config.peft_config(base)?;
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

/// Rank 4, alpha 8 on `targets` (the tests' settings).
#[cfg(test)]
fn test_config(targets: TargetModules) -> LoraConfig {
    LoraConfig {
        target_modules: targets,
        ..LoraConfig::new(4, 8.0)
    }
}

#[cfg(test)]
mod tests {
    use super::test_config as config;
    use super::*;

    #[test]
    fn peft_s_boilerplate_is_taken_where_it_means_what_crpo_does() {
        let mut lora = config(TargetModules::default());
        lora.task_type = Some("CAUSAL_LM".into());
        lora.bias = Some("none".into());
        assert!(lora.validate().is_ok());
        // Checked, not passed on: a policy plugin on an earlier sdk refuses unknown keys.
        let written = serde_json::to_value(&lora).unwrap();
        assert!(
            written.get("task_type").is_none() && written.get("bias").is_none(),
            "{written}"
        );
        lora.bias = Some("lora_only".into());
        assert!(lora.validate().unwrap_err().to_string().contains("lora.bias"));
        lora.bias = None;
        lora.task_type = Some("SEQ_CLS".into());
        assert!(lora
            .validate()
            .unwrap_err()
            .to_string()
            .contains("lora.task_type"));
    }

    #[test]
    fn a_pickled_adapter_is_named_with_how_to_convert_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("adapter_model.bin"), b"pickle").unwrap();
        let error = read_adapter_weights(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("adapter_model.bin") && error.contains("safe_serialization=True"),
            "{error}"
        );
    }

    #[test]
    fn a_cut_short_adapter_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let matrix = Tensor::ones([2, 3], (tch::Kind::Float, tch::Device::Cpu));
        let path = dir.path().join(ADAPTER_WEIGHTS);
        Tensor::write_safetensors(&[("a", &matrix)], &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let error = read_adapter_weights(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains(ADAPTER_WEIGHTS) && error.contains("not a complete safetensors file"),
            "{error}"
        );
    }

    /// The host hands a policy plugin its LoRA settings as a JSON value: the patterns keep
    /// their order there (the first matching key gives a layer its rank and alpha), where a
    /// sorted map would pick another key.
    #[test]
    fn patterns_keep_their_order_through_a_json_value() {
        let mut lora = LoraConfig::new(4, 8.0);
        lora.alpha_pattern.insert("q_proj".into(), 2.0);
        lora.alpha_pattern
            .insert("model.layers.0.self_attn.q_proj".into(), 64.0);
        let value = serde_json::to_value(&lora).unwrap();
        let back: LoraConfig = serde_json::from_value(value).unwrap();
        assert_eq!(back.alpha_pattern.keys().next().unwrap(), "q_proj");
    }

    #[test]
    fn rank_and_alpha_default_to_peft_s() {
        let lora: LoraConfig = serde_json::from_str("{}").unwrap();
        assert_eq!((lora.r, lora.lora_alpha), (8, 8.0));
        assert_eq!(lora.target_modules, TargetModules::default());
    }

    #[test]
    fn a_peft_name_gives_back_its_module_and_matrix() {
        let module = "model.layers.3.mlp.up_proj";
        assert_eq!(module_of(&peft_name(module, "lora_B")), Some((module, "lora_B")));
        assert_eq!(module_of("base_model.model.lm_head.weight"), None);
        assert_eq!(module_of("model.layers.0.q_proj.lora_A.weight"), None);
    }

    #[test]
    fn scale_by_hand() {
        let module = "model.layers.0.mlp.up_proj";
        assert_eq!(config(TargetModules::default()).scale_for(module), 2.0);
        let rs = LoraConfig {
            use_rslora: true,
            ..config(TargetModules::default())
        };
        assert_eq!(rs.scale_for(module), 4.0, "8 / √4");
    }

    #[test]
    fn a_fresh_adapter_adds_nothing_and_off_adds_nothing_either() {
        let on = Arc::new(AtomicBool::new(true));
        let adapter = LoraAdapter::fresh(
            "model.layers.0.mlp.up_proj",
            (6, 5),
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
}
