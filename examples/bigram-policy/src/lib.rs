//! `bigram`: the smallest policy model worth training — next-token logits read from a
//! vocab × vocab table indexed by the current token. The model directory holds `config.json`
//! (`{"model_type": "bigram", "vocab_size": N}`) and, once trained, `bigram.safetensors`; a
//! directory without weights starts uniform (all logits 0). The host owns the optimizer: it
//! steps the table through the handle `parameters()` returns, and the generation loop: the
//! model only reads the current token, so its key/value cache has no layers (it still marks
//! the positions it was given).

use crpo_policy_sdk::sdk::{parse_options, NoOptions};
use crpo_policy_sdk::tch::{Device, Kind, Tensor};
use crpo_policy_sdk::{
    CacheLayout, KeyValues, KvCache, PluginError, PluginInfo, PolicyLoad, PolicyModel, PolicyPlugin,
};
use serde::Deserialize;
use std::path::Path;

const WEIGHTS: &str = "bigram.safetensors";
const TABLE: &str = "bigram.weight";

#[derive(Deserialize)]
struct Config {
    model_type: String,
    vocab_size: i64,
}

pub struct BigramPlugin;

impl PolicyPlugin for BigramPlugin {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            "bigram",
            env!("CARGO_PKG_VERSION"),
            "bigram language model (a vocab x vocab logit table)",
        )
    }

    fn load(&self, request: &PolicyLoad<'_>) -> Result<Box<dyn PolicyModel>, PluginError> {
        parse_options::<NoOptions>(request.options)?;
        let config_path = request.dir.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| PluginError::failed(format!("{}: {e}", config_path.display())))?;
        let config: Config = serde_json::from_str(&text)
            .map_err(|e| PluginError::failed(format!("{}: {e}", config_path.display())))?;
        if config.model_type != "bigram" || config.vocab_size <= 0 {
            return Err(PluginError::failed(format!(
                "{}: not a bigram model",
                config_path.display()
            )));
        }
        let weights = request.dir.join(WEIGHTS);
        let table = if weights.exists() {
            let mut tensors = Tensor::read_safetensors(&weights)
                .map_err(|e| PluginError::failed(format!("{}: {e}", weights.display())))?;
            let position = tensors
                .iter()
                .position(|(name, _)| name == TABLE)
                .ok_or_else(|| {
                    PluginError::failed(format!("{}: tensor `{TABLE}` is missing", weights.display()))
                })?;
            tensors.swap_remove(position).1
        } else {
            Tensor::zeros([config.vocab_size, config.vocab_size], (Kind::Float, Device::Cpu))
        };
        if table.size() != [config.vocab_size, config.vocab_size] {
            return Err(PluginError::failed(format!(
                "{}: `{TABLE}` has shape {:?}",
                weights.display(),
                table.size()
            )));
        }
        let table = table
            .to_device(request.device)
            .to_kind(request.kind)
            .set_requires_grad(true);
        Ok(Box::new(Bigram {
            table,
            vocab_size: config.vocab_size,
        }))
    }
}

struct Bigram {
    table: Tensor,
    vocab_size: i64,
}

impl PolicyModel for Bigram {
    fn cache_layout(&self) -> Option<CacheLayout> {
        // Only the current token matters: no layer keeps keys or values.
        Some(CacheLayout {
            layers: 0,
            kv_heads: 0,
            head_dim: 0,
        })
    }

    fn forward(&self, input_ids: &Tensor, _attention_mask: &Tensor) -> Result<Tensor, PluginError> {
        let (b, t) = input_ids.size2().map_err(PluginError::failed)?;
        Ok(self
            .table
            .index_select(0, &input_ids.reshape([-1]))
            .view([b, t, self.vocab_size]))
    }

    fn forward_cached(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor, PluginError> {
        cache.extend(attention_mask)?;
        Ok(self.table.index_select(0, &input_ids.select(1, -1)))
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![(TABLE.to_string(), self.table.shallow_clone())]
    }

    fn save(&self, dir: &Path) -> Result<(), PluginError> {
        std::fs::create_dir_all(dir).map_err(|e| PluginError::failed(format!("{}: {e}", dir.display())))?;
        let config = serde_json::json!({"model_type": "bigram", "vocab_size": self.vocab_size});
        std::fs::write(dir.join("config.json"), config.to_string())
            .map_err(|e| PluginError::failed(e.to_string()))?;
        let table = self.table.detach().to_device(Device::Cpu).to_kind(Kind::Float);
        Tensor::write_safetensors(&[(TABLE, &table)], dir.join(WEIGHTS)).map_err(PluginError::failed)
    }
}

crpo_policy_sdk::export_plugin_library! {
    rewards: [],
    datasets: [],
    policies: [BigramPlugin],
}
