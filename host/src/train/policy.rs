//! A policy as the trainer drives it: any policy plugin's model (built in or loaded from a
//! library) with the tokenizer of its directory. Generation and log-probs go through the
//! plugin's `forward`, so the trainer cannot tell a built-in model from a loaded one.

use super::config::ModelSection;
use crate::device::{parse_device, parse_dtype};
use crate::plugins::PluginRegistry;
use anyhow::Context;
use crpo_plugins_policy::generation::{generate_with, Completion, SamplingConfig, TokenSpace};
use crpo_plugins_policy::logprobs::{completion_logprobs_with, ContinuationBatch, TokenLogProbs};
use crpo_plugins_policy::tokenizer::ChatTokenizer;
use crpo_sdk::policy::{PolicyLoad, PolicyModel};
use crpo_sdk::PluginError;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

// Files of the model directory the host owns (the plugin writes config and weights).
use crpo_plugins_policy::policy::COPIED_FILES as TOKENIZER_FILES;

pub struct LoadedPolicy {
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

impl LoadedPolicy {
    /// Loads `dir` with the configured policy plugin on the configured device and dtype.
    pub fn load(registry: &PluginRegistry, section: &ModelSection, dir: &Path) -> anyhow::Result<Self> {
        let device = parse_device(&section.device).context("model.device")?;
        let kind = parse_dtype(&section.dtype, device).context("model.dtype")?;
        let plugin = registry.policy(&section.policy)?;
        let options = serde_json::to_value(&section.options)?;
        let model = plugin
            .plugin()
            .load(&PolicyLoad {
                dir,
                device,
                kind,
                options: &options,
            })
            .with_context(|| format!("policy `{}` cannot load {}", section.policy, dir.display()))?;
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
        Ok(LoadedPolicy {
            model,
            tokenizer,
            device,
            kind,
            source: dir.to_path_buf(),
            plugin: section.policy.clone(),
            tokenizer_files,
        })
    }

    /// Samples one completion per prompt (token ids), in batches of at most `batch` prompts.
    pub fn generate(
        &self,
        prompts: &[Vec<i64>],
        sampling: &SamplingConfig,
    ) -> Result<Vec<Completion>, PluginError> {
        let cache = self.model.new_cache();
        let mut step = |ids: &Tensor, mask: &Tensor, repeats: Option<&[i64]>| match repeats {
            Some(repeats) => self.model.prefill_repeated(ids, mask, repeats, cache),
            None => self.model.forward(ids, mask, Some(cache)),
        };
        let tokens = TokenSpace {
            eos_ids: self.tokenizer.eos_ids(),
            pad_id: self.tokenizer.pad_id(),
            usable_vocab: self.tokenizer.vocab_size(),
        };
        let result = generate_with(&mut step, self.device, prompts, &tokens, sampling);
        self.model.drop_cache(cache);
        result
    }

    /// Per-token log-probs and entropies of completions given their prompts (row by row; equal
    /// consecutive prompts run once), with grad unless the caller holds a no-grad guard. The
    /// entropies carry grad only with `entropy_grad` (an entropy bonus in the loss).
    pub fn logprobs(
        &self,
        prompts: &[Vec<i64>],
        completions: &[Vec<i64>],
        entropy_grad: bool,
    ) -> Result<TokenLogProbs, PluginError> {
        let batch = ContinuationBatch::new(prompts, completions, self.tokenizer.pad_id() as i64, self.device);
        let forward = |batch: &ContinuationBatch| {
            self.model.forward_continuations(
                &batch.prompt_ids,
                &batch.prompt_mask,
                &batch.repeats,
                &batch.continuation_ids,
                &batch.continuation_mask,
            )
        };
        completion_logprobs_with(forward, &batch, entropy_grad)
    }

    pub fn decode(&self, ids: &[i64]) -> anyhow::Result<String> {
        Ok(self.tokenizer.decode(ids)?)
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
