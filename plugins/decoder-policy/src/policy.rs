//! A model as users point at it: a Hugging Face model directory's config and weights, loaded on
//! a device in a dtype and saved back in the same layout (the host handles the tokenizer).

use crate::config::DecoderConfig;
use crate::error::{invalid, io, Result};
use crate::qwen2::DecoderModel;
use crate::weights;
use std::path::Path;
use tch::{nn::VarStore, Device, Kind};

pub struct Policy {
    pub config: DecoderConfig,
    pub vs: VarStore,
    pub model: DecoderModel,
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
        let config = read_config(dir)?;
        let mut vs = VarStore::new(device);
        let model = DecoderModel::new(&vs.root(), &config);
        if kind != Kind::Float {
            vs.set_kind(kind);
        }
        weights::load(&mut vs, dir)?;
        Ok(Policy { config, vs, model })
    }

    /// Writes config.json and model.safetensors to `dir` (created).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut config = self.config.clone();
        let kind = self
            .vs
            .variables()
            .values()
            .next()
            .map_or(Kind::Float, |t| t.kind());
        config.torch_dtype = Some(dtype_name(kind).to_string());
        let config_path = dir.join("config.json");
        let json = serde_json::to_string_pretty(&config).map_err(|e| invalid(&config_path, e))?;
        std::fs::write(&config_path, json).map_err(io(&config_path))?;
        weights::save(&self.vs, dir)
    }
}
