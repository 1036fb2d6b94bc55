//! A model as users point at it: a Hugging Face model directory's config and weights, loaded on
//! a device in a dtype and saved back in the same layout (the host handles the tokenizer).

use crate::config::DecoderConfig;
use crate::error::{invalid, io, PolicyError, Result};
use crate::qwen2::DecoderModel;
use crate::weights;
use crpo_policy_sdk::lora::{self, LoraConfig};
use std::path::{Path, PathBuf};
use tch::{nn::VarStore, Device, Kind, Tensor};

pub struct Policy {
    pub config: DecoderConfig,
    pub vs: VarStore,
    pub model: DecoderModel,
    /// Under LoRA: the adapters' settings, their matrices by PEFT name (the trainable
    /// parameters: the base weights are frozen), and the base model's directory.
    pub lora: Option<Lora>,
}

pub struct Lora {
    pub config: LoraConfig,
    pub adapters: Vec<(String, Tensor)>,
    pub base: PathBuf,
}

pub fn read_config(dir: &Path) -> Result<DecoderConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let config: DecoderConfig = serde_json::from_str(&text).map_err(|e| invalid(&path, e))?;
    config.validate().map_err(|e| invalid(&path, e))?;
    Ok(config)
}

/// The dtype name transformers writes for a kind.
pub fn dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        _ => "float32",
    }
}

impl Policy {
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        Self::load_with_lora(dir, device, kind, None)
    }

    /// Loads `dir`; with `lora`, freezes its weights and gives the targeted layers adapters
    /// (fresh, or `lora.adapter`'s).
    pub fn load_with_lora(dir: &Path, device: Device, kind: Kind, lora: Option<&LoraConfig>) -> Result<Self> {
        let config = read_config(dir)?;
        // Checked before the model's variables are made: a config.json with absurd sizes
        // would otherwise ask for terabytes before any tensor is compared with it. Within
        // twice the weights, the load goes on and names the tensor that is missing or misshapen.
        let (needed, stored) = (config.least_parameters(), weights::stored_elements(dir)?);
        if needed > stored.saturating_mul(2) {
            return Err(invalid(
                dir.join("config.json"),
                format!(
                    "describes a model of at least {needed} parameters, but the weights beside it hold {stored}: config.json does not describe these weights"
                ),
            ));
        }
        let mut vs = VarStore::new(device);
        let mut model = DecoderModel::new(&vs.root(), &config);
        if kind != Kind::Float {
            vs.set_kind(kind);
        }
        let unused = weights::load(&mut vs, dir)?;
        if let Some(first) = unused.first() {
            // As transformers says it ("Some weights of the model checkpoint were not used"):
            // a bias config.json leaves out (attention_bias) changes what the model computes.
            tracing::warn!(
                "{}: {} tensor(s) in its weights are not used by the model config.json describes (first: `{first}`): check config.json (attention_bias, mlp_bias, tie_word_embeddings)",
                dir.display(),
                unused.len()
            );
        }
        let lora = match lora {
            None => None,
            Some(settings) => {
                // The host checks the trainable parameters, which under LoRA are the adapters
                // alone: the frozen base is checked here (NaN in it failed at the first
                // gradient, blamed on the learning rate).
                check_finite(&vs, dir)?;
                for (_, variable) in vs.variables() {
                    let _ = variable.set_requires_grad(false);
                }
                let adapters = model.attach_lora(settings);
                if adapters.is_empty() {
                    let selects_none = format!(
                        "target_modules (less exclude_modules, within layers_to_transform) selects none of {}'s linear layers (model.layers.N.self_attn.q_proj, k_proj, v_proj, o_proj; model.layers.N.mlp.gate_proj, up_proj, down_proj)",
                        dir.display()
                    );
                    return Err(match &settings.adapter {
                        Some(adapter) => invalid(adapter.join(lora::ADAPTER_CONFIG), selects_none),
                        None => invalid("model.lora", selects_none),
                    });
                }
                if let Some(adapter_dir) = &settings.adapter {
                    load_adapter(&adapters, adapter_dir)?;
                }
                let base = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
                Some(Lora {
                    config: LoraConfig {
                        adapter: None,
                        ..settings.clone()
                    },
                    adapters,
                    base,
                })
            }
        };
        Ok(Policy {
            config,
            vs,
            model,
            lora,
        })
    }

    /// Writes the model to `dir` (created): config.json and model.safetensors, or under LoRA
    /// the adapter directory PEFT reads (its base model named in adapter_config.json).
    pub fn save(&self, dir: &Path) -> Result<()> {
        if let Some(lora) = &self.lora {
            return lora::write_adapter(dir, &lora.config, &lora.base, &lora.adapters)
                .map_err(|e| invalid(dir, e));
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut config = self.config.clone();
        let kind = self
            .vs
            .variables()
            .values()
            .next()
            .map_or(Kind::Float, |t| t.kind());
        // transformers 4 reads `torch_dtype`, transformers 5 `dtype`: both name what is written
        // (a stale `dtype` made transformers 5 load f32 weights as bf16).
        config.torch_dtype = Some(dtype_name(kind).to_string());
        config.dtype = config.torch_dtype.clone();
        let config_path = dir.join("config.json");
        let json = serde_json::to_string_pretty(&config).map_err(|e| invalid(&config_path, e))?;
        std::fs::write(&config_path, json).map_err(io(&config_path))?;
        weights::save(&self.vs, dir)
    }
}

/// Every weight in `vs` finite, else an error naming the first that is not.
fn check_finite(vs: &VarStore, dir: &Path) -> Result<()> {
    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, variable) in variables {
        if !crpo_policy_sdk::tensor::all_finite(&variable)? {
            return Err(invalid(
                dir,
                format!(
                    "weight `{name}` holds non-finite values (NaN or ±inf): the model diverged in training or its file is damaged"
                ),
            ));
        }
    }
    Ok(())
}

/// Copies an adapter directory's matrices into `adapters` (by PEFT name), refusing missing,
/// extra or misshapen ones.
fn load_adapter(adapters: &[(String, Tensor)], dir: &Path) -> Result<()> {
    let file = dir.join(lora::ADAPTER_WEIGHTS);
    let mut saved: std::collections::HashMap<String, Tensor> = lora::read_adapter_weights(dir)
        .map_err(|e| PolicyError::Adapter(e.to_string()))?
        .into_iter()
        .collect();
    for (name, tensor) in adapters {
        let found = saved.remove(name).ok_or_else(|| PolicyError::MissingTensor {
            name: name.clone(),
            from: file.display().to_string(),
        })?;
        if found.size() != tensor.size() {
            return Err(PolicyError::Shape {
                name: name.clone(),
                file: file.clone(),
                expected: tensor.size(),
                found: found.size(),
            });
        }
        tch::no_grad(|| {
            tensor
                .shallow_clone()
                .f_copy_(&found.to_kind(tensor.kind()).to_device(tensor.device()))
        })?;
    }
    match saved.into_keys().next() {
        Some(extra) => Err(invalid(
            &file,
            format!(
                "`{extra}` adapts no layer of this model under the run's lora settings (r, target_modules)"
            ),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_config_names_the_written_dtype_under_both_keys() {
        let source = tempfile::tempdir().unwrap();
        crate::presets::write_tiny(source.path(), 0).unwrap();
        // A config saved by transformers 5 from a bf16 model: `dtype` says bfloat16.
        let path = source.path().join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        config["dtype"] = "bfloat16".into();
        config["torch_dtype"] = "bfloat16".into();
        std::fs::write(&path, config.to_string()).unwrap();
        for (kind, name) in [(Kind::Float, "float32"), (Kind::BFloat16, "bfloat16")] {
            let policy = Policy::load(source.path(), Device::Cpu, kind).unwrap();
            let saved = tempfile::tempdir().unwrap();
            policy.save(saved.path()).unwrap();
            let text = std::fs::read_to_string(saved.path().join("config.json")).unwrap();
            let written: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                (written["dtype"].as_str(), written["torch_dtype"].as_str()),
                (Some(name), Some(name))
            );
        }
    }
}
