//! A policy as the engine drives it: any policy plugin's model (built in or loaded from a
//! library) with the tokenizer of its directory. Generation and log-prob passes are the
//! engine's, over the plugin's forward passes, so a built-in model and a loaded one take the
//! same path.

use super::generation::{generate, Completion, GenerationStats, TokenSpace};
use super::logprobs::{completion_logprobs, ContinuationBatch, TokenLogProbs};
use super::sampling::SamplingConfig;
use super::tokenizer::{ChatTokenizer, TOKENIZER_FILES};
use crate::device::{parse_device, parse_dtype};
use crate::plugins::PluginRegistry;
use crate::train::config::ModelSection;
use anyhow::Context;
use crpo_policy_sdk::{PolicyLoad, PolicyModel};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub struct Policy {
    pub model: Box<dyn PolicyModel>,
    pub tokenizer: ChatTokenizer,
    pub device: Device,
    pub kind: Kind,
    pub source: PathBuf,
    pub plugin: String,
    /// The tokenizer files as loaded: the source directory may be an old checkpoint that is
    /// pruned while this policy still saves new ones.
    tokenizer_files: Vec<(&'static str, Vec<u8>)>,
}

impl Policy {
    /// Loads `dir` with the configured policy plugin on the configured device and dtype.
    pub fn load(registry: &PluginRegistry, section: &ModelSection, dir: &Path) -> anyhow::Result<Self> {
        let device = parse_device(&section.device).context("model.device")?;
        let kind = parse_dtype(&section.dtype, device).context("model.dtype")?;
        let options = serde_json::to_value(&section.options)?;
        Self::load_with(registry, &section.policy, dir, device, kind, &options)
    }

    /// Loads `dir` with policy plugin `plugin`.
    pub fn load_with(
        registry: &PluginRegistry,
        plugin: &str,
        dir: &Path,
        device: Device,
        kind: Kind,
        options: &serde_json::Value,
    ) -> anyhow::Result<Self> {
        let model = registry
            .policy(plugin)?
            .plugin()
            .load(&PolicyLoad {
                dir,
                device,
                kind,
                options,
            })
            .with_context(|| format!("policy `{plugin}` cannot load {}", dir.display()))?;
        let tokenizer = ChatTokenizer::from_dir(dir)
            .with_context(|| format!("cannot read the tokenizer of {}", dir.display()))?;
        let mut tokenizer_files = Vec::new();
        for file in TOKENIZER_FILES {
            let path = dir.join(file);
            if path.exists() {
                tokenizer_files.push((
                    file,
                    std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
                ));
            }
        }
        Ok(Policy {
            model,
            tokenizer,
            device,
            kind,
            source: dir.to_path_buf(),
            plugin: plugin.to_string(),
            tokenizer_files,
        })
    }

    fn tokens(&self) -> TokenSpace<'_> {
        TokenSpace {
            eos_ids: self.tokenizer.eos_ids(),
            pad_id: self.tokenizer.pad_id(),
            usable_vocab: self.tokenizer.vocab_size(),
        }
    }

    /// Samples one completion per prompt (token ids).
    pub fn generate(
        &self,
        prompts: &[Vec<i64>],
        sampling: &SamplingConfig,
    ) -> anyhow::Result<(Vec<Completion>, GenerationStats)> {
        generate(
            &*self.model,
            self.kind,
            self.device,
            prompts,
            &self.tokens(),
            sampling,
        )
        .with_context(|| format!("policy `{}` failed to generate", self.plugin))
    }

    /// Per-token log-probs and entropies of completions given their prompts (row by row; equal
    /// consecutive prompts run once), with grad unless the caller holds a no-grad guard. The
    /// entropies carry grad only with `entropy_grad` (an entropy bonus in the loss).
    pub fn logprobs(
        &self,
        prompts: &[Vec<i64>],
        completions: &[Vec<i64>],
        entropy_grad: bool,
    ) -> anyhow::Result<TokenLogProbs> {
        let batch =
            ContinuationBatch::new(prompts, completions, self.tokenizer.pad_id() as i64, self.device)?;
        completion_logprobs(&*self.model, &batch, entropy_grad)
            .with_context(|| format!("policy `{}` failed a log-prob pass", self.plugin))
    }

    pub fn decode(&self, ids: &[i64]) -> anyhow::Result<String> {
        self.tokenizer.decode(ids)
    }

    /// Writes the model as a Hugging Face directory: the plugin's config and weights plus the
    /// tokenizer files it was loaded with.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        self.model
            .save(dir)
            .with_context(|| format!("policy `{}` cannot save to {}", self.plugin, dir.display()))?;
        for (file, bytes) in &self.tokenizer_files {
            let path = dir.join(file);
            std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    /// Trainable parameters, sharing storage with the model.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        self.model.parameters()
    }
}
