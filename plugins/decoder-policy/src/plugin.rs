//! The decoder as the built-in `qwen2` policy plugin: config, weights and forward passes
//! behind the sdk's interface, through which the host's engine drives it exactly as it drives
//! a policy loaded from a library.

use crate::policy::Policy;
use crate::presets::{write_preset, Preset};
use crpo_policy_sdk::lora::LoraConfig;
use crpo_policy_sdk::sdk::parse_options;
use crpo_policy_sdk::{
    repeat_index, CacheLayout, KvCache, PluginError, PluginInfo, PolicyLoad, PolicyModel, PolicyPlugin,
    Result,
};
use serde::Deserialize;
use std::path::Path;
use tch::Tensor;

pub struct Qwen2PolicyPlugin;

/// The decoder's options: LoRA adapters (the host passes `model.lora` here).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecoderOptions {
    #[serde(default)]
    lora: Option<LoraConfig>,
}

impl PolicyPlugin for Qwen2PolicyPlugin {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            "qwen2",
            env!("CARGO_PKG_VERSION"),
            "Qwen2/Llama decoder from a Hugging Face model directory (config.json, safetensors)",
        )
    }

    fn load(&self, request: &PolicyLoad<'_>) -> Result<Box<dyn PolicyModel>> {
        let options = parse_options::<DecoderOptions>(request.options)?;
        if let Some(lora) = &options.lora {
            lora.validate()?;
        }
        let policy = Policy::load_with_lora(request.dir, request.device, request.kind, options.lora.as_ref())
            .map_err(PluginError::failed)?;
        Ok(Box::new(Qwen2Model(policy)))
    }

    fn presets(&self) -> Vec<String> {
        Preset::NAMES.iter().map(|n| n.to_string()).collect()
    }

    fn write_preset(&self, name: &str, dir: &Path, seed: u64) -> Result<()> {
        let preset = Preset::from_name(name).ok_or_else(|| {
            PluginError::failed(format!(
                "no preset `{name}` (expected one of {})",
                Preset::NAMES.join(", ")
            ))
        })?;
        write_preset(dir, preset, seed as i64).map_err(PluginError::failed)
    }
}

crpo_policy_sdk::register_policy!(Qwen2PolicyPlugin);

/// A loaded Qwen2/Llama model.
pub struct Qwen2Model(pub Policy);

impl PolicyModel for Qwen2Model {
    fn cache_layout(&self) -> Option<CacheLayout> {
        Some(self.0.model.cache_layout())
    }

    fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        self.0.model.forward(input_ids, attention_mask)
    }

    fn forward_cached(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        self.0.model.forward_cached(input_ids, attention_mask, cache)
    }

    /// A step is tensor operations only, its positions and masks the cache's (qwen2.rs); on
    /// the GPU no projection takes the CPU's packed path.
    fn decode_step_is_capturable(&self) -> bool {
        true
    }

    fn forward_from(&self, input_ids: &Tensor, attention_mask: &Tensor, first: i64) -> Result<Tensor> {
        self.0.model.forward_from(input_ids, attention_mask, first)
    }

    fn forward_continuations(
        &self,
        prompt_ids: &Tensor,
        prompt_mask: &Tensor,
        repeats: &[i64],
        continuation_ids: &Tensor,
        continuation_mask: &Tensor,
    ) -> Result<Tensor> {
        let rows = repeat_index(repeats, prompt_ids.device())?;
        self.0.model.forward_continuations(
            prompt_ids,
            prompt_mask,
            &rows,
            continuation_ids,
            continuation_mask,
        )
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        if let Some(lora) = &self.0.lora {
            // Under LoRA only the adapters train, by their PEFT names.
            return lora
                .adapters
                .iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect();
        }
        // A query, not a fixed list: frozen variables are left out.
        let mut named: Vec<(String, Tensor)> = self
            .0
            .vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    }

    fn save(&self, dir: &Path) -> Result<()> {
        self.0.save(dir).map_err(PluginError::failed)
    }

    fn set_gradient_checkpointing(&self, enabled: bool) -> Result<()> {
        self.0.model.set_gradient_checkpointing(enabled);
        Ok(())
    }

    fn set_adapters_enabled(&self, enabled: bool) -> Result<()> {
        if self.0.lora.is_none() {
            return Err(PluginError::failed("this model was loaded without LoRA adapters"));
        }
        self.0.model.set_adapters_enabled(enabled);
        Ok(())
    }
}
