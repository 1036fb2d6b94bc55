//! A policy as users point at it: a Hugging Face model directory loaded as config, weights and
//! tokenizer, on a device in a dtype; saved back in the same layout.

use crate::config::DecoderConfig;
use crate::error::{invalid, io, Result};
use crate::generation::{generate, Completion, SamplingConfig};
use crate::qwen2::DecoderModel;
use crate::tokenizer::ChatTokenizer;
use crate::weights;
use std::path::{Path, PathBuf};
use tch::{nn::VarStore, Device, Kind};

/// Tokenizer and generation files of a model directory, copied as they are when a policy is
/// saved (the host carries the same set for policies of any plugin).
pub const COPIED_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
    "special_tokens_map.json",
];

pub struct Policy {
    pub config: DecoderConfig,
    pub vs: VarStore,
    pub model: DecoderModel,
    pub tokenizer: ChatTokenizer,
    source: PathBuf,
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
        let tokenizer = ChatTokenizer::from_dir(dir)?;
        Ok(Policy {
            config,
            vs,
            model,
            tokenizer,
            source: dir.to_path_buf(),
        })
    }

    /// Writes config.json, model.safetensors and the tokenizer files to `dir` (created).
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
        weights::save(&self.vs, dir)?;
        for file in COPIED_FILES {
            let from = self.source.join(file);
            if from.exists() && self.source != dir {
                std::fs::copy(&from, dir.join(file)).map_err(io(&from))?;
            }
        }
        Ok(())
    }

    /// Generates a completion for each prompt text (already templated).
    pub fn generate_texts(
        &self,
        prompts: &[String],
        sampling: &SamplingConfig,
    ) -> Result<Vec<(String, Completion)>> {
        let ids = prompts
            .iter()
            .map(|p| self.tokenizer.encode(p))
            .collect::<Result<Vec<_>>>()?;
        let completions = generate(
            &self.model,
            &ids,
            self.tokenizer.eos_ids(),
            self.tokenizer.pad_id(),
            self.tokenizer.vocab_size(),
            sampling,
        );
        completions
            .into_iter()
            .map(|c| Ok((self.tokenizer.decode(&c.ids)?, c)))
            .collect()
    }
}
