//! A policy as the engine drives it: any policy plugin's model (built in or loaded from a
//! library) with the tokenizer of its directory. Generation and log-prob passes are the
//! engine's, over the plugin's forward passes, so a built-in model and a loaded one take the
//! same path.

use super::generation::{generate, Completion, DecodeSteps, GenerationStats, TokenSpace};
use super::logprobs::{completion_logprobs, ContinuationBatch, TokenLogProbs};
use super::sampling::SamplingConfig;
use super::tokenizer::{ChatTokenizer, TOKENIZER_FILES};
use crate::device::{parse_device, parse_dtype};
use crate::plugins::{Origin, PluginRegistry};
use crate::train::config::ModelSection;
use anyhow::{bail, Context};
use crpo_policy_sdk::lora;
use crpo_policy_sdk::tensor::all_finite;
use crpo_policy_sdk::{PolicyLoad, PolicyModel};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub struct Policy {
    pub model: Box<dyn PolicyModel>,
    /// Loaded with LoRA adapters: only they train, and the reference is the base (adapters off).
    pub adapters: bool,
    /// The adapters' dropout (0 without adapters): layers that drop at random cannot be
    /// recomputed by activation checkpointing.
    lora_dropout: f64,
    pub tokenizer: ChatTokenizer,
    pub device: Device,
    pub kind: Kind,
    pub source: PathBuf,
    pub plugin: String,
    /// The positions of the directory's config.json (`max_position_embeddings`, else
    /// transformers' default for its model type; none without a config.json): prompt and
    /// completion budgets must fit in them.
    pub max_positions: Option<usize>,
    /// The tokenizer files as loaded: the source directory may be an old checkpoint that is
    /// pruned while this policy still saves new ones.
    tokenizer_files: Vec<(&'static str, Vec<u8>)>,
}

impl Policy {
    /// Loads `dir` with the configured policy plugin on the configured device and dtype, with
    /// `model.lora`'s adapters when set.
    pub fn load(registry: &PluginRegistry, section: &ModelSection, dir: &Path) -> anyhow::Result<Self> {
        let device = parse_device(&section.device).context("model.device")?;
        let kind = parse_dtype(&section.dtype, device).context("model.dtype")?;
        let mut options = serde_json::to_value(&section.options)?;
        let mut loaded_lora = None;
        if let (Some(lora), Some(map)) = (&section.lora, options.as_object_mut()) {
            lora.validate().context("model.lora")?;
            let (loaded, recorded_base) = lora_as_loaded(lora)?;
            // `dir` is the base unless it is itself an adapter (a checkpoint resumed).
            if let (Some(adapter), Some(recorded_base)) = (&lora.adapter, recorded_base) {
                if !dir.join(lora::ADAPTER_CONFIG).exists() {
                    warn_if_another_base(adapter, &recorded_base, dir, "model.path");
                }
            }
            warn_where_overridden(lora, &loaded);
            map.insert("lora".into(), serde_json::to_value(&loaded)?);
            loaded_lora = Some(loaded);
        }
        let policy = Self::load_with(registry, &section.policy, dir, device, kind, &options)?;
        if let Some(lora) = &loaded_lora {
            warn_unmatched_targets(lora, &policy.parameters());
        }
        Ok(policy)
    }

    /// Loads `dir` with policy plugin `plugin`. An adapter directory (PEFT's
    /// adapter_config.json) loads its base model with the adapter on it.
    pub fn load_with(
        registry: &PluginRegistry,
        plugin: &str,
        dir: &Path,
        device: Device,
        kind: Kind,
        options: &serde_json::Value,
    ) -> anyhow::Result<Self> {
        require_local_model(dir, "the model directory")?;
        refuse_a_checkpoint_for_its_model(dir)?;
        if !dir.join(lora::ADAPTER_CONFIG).exists() {
            return Self::load_model(registry, plugin, dir, dir, device, kind, options);
        }
        let (adapter, base) = lora::read_adapter_config(dir)?;
        if !base.join("config.json").exists() {
            bail!(
                "{}: its base model `{}` (base_model_name_or_path in adapter_config.json) is not a model directory here: point it at the base model's local directory, or merge the adapter elsewhere (crpo-host merge-lora)",
                dir.display(),
                base.display()
            );
        }
        let mut options = match options {
            serde_json::Value::Null => serde_json::json!({}),
            other => other.clone(),
        };
        if let Some(map) = options.as_object_mut() {
            let adapter = match map.get("lora") {
                Some(configured) if !configured.is_null() => {
                    let configured: lora::LoraConfig = serde_json::from_value(configured.clone())?;
                    let loaded = adapter_settings(&configured, adapter, dir);
                    warn_where_overridden(&configured, &loaded);
                    loaded
                }
                _ => adapter,
            };
            map.insert("lora".into(), serde_json::to_value(&adapter)?);
        }
        // The tokenizer: the adapter directory's when it has one, else the base model's.
        let tokenizer_dir = if dir.join("tokenizer.json").exists() {
            dir
        } else {
            &base
        };
        let mut policy = Self::load_model(registry, plugin, &base, tokenizer_dir, device, kind, &options)
            .with_context(|| format!("loading the base model of adapter {}", dir.display()))?;
        policy.source = dir.to_path_buf();
        Ok(policy)
    }

    /// Loads the model directory `dir` with policy plugin `plugin`, the tokenizer from
    /// `tokenizer_dir`.
    fn load_model(
        registry: &PluginRegistry,
        plugin: &str,
        dir: &Path,
        tokenizer_dir: &Path,
        device: Device,
        kind: Kind,
        options: &serde_json::Value,
    ) -> anyhow::Result<Self> {
        let adapters = options.get("lora").is_some_and(|l| !l.is_null());
        let registered = registry.policy(plugin)?;
        let model = registered
            .plugin()
            .load(&PolicyLoad {
                dir,
                device,
                kind,
                options,
            })
            .with_context(|| {
                if adapters {
                    format!(
                        "policy `{plugin}` cannot load {} with LoRA adapters (model.lora)",
                        dir.display()
                    )
                } else {
                    format!("policy `{plugin}` cannot load {}", dir.display())
                }
            })?;
        check_contract(&*model, plugin, &registered.origin)?;
        let tokenizer = ChatTokenizer::from_dir(tokenizer_dir)
            .with_context(|| format!("cannot read the tokenizer of {}", tokenizer_dir.display()))?;
        if tokenizer.eos_ids().is_empty() {
            // As transformers' generate without one: each completion runs to its budget.
            crate::warn_once::warn_once(&format!("no EOS {}", tokenizer_dir.display()), || {
                format!(
                    "{}: no EOS token (eos_token_id in generation_config.json or config.json, eos_token in tokenizer_config.json): every completion runs to its token budget",
                    tokenizer_dir.display()
                )
            });
        }
        check_weights_are_finite(&*model, dir)?;
        check_vocabulary(&*model, &tokenizer, dir, device)?;
        let mut tokenizer_files = Vec::new();
        for file in TOKENIZER_FILES {
            let path = tokenizer_dir.join(file);
            if path.exists() {
                tokenizer_files.push((
                    file,
                    std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
                ));
            }
        }
        let lora_dropout = options
            .pointer("/lora/lora_dropout")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0);
        Ok(Policy {
            adapters,
            lora_dropout,
            max_positions: crate::train::position_budget::positions_of(dir)?,
            model,
            tokenizer,
            device,
            kind,
            source: dir.to_path_buf(),
            plugin: plugin.to_string(),
            tokenizer_files,
        })
    }

    /// Refuses budgets beyond the model's positions: `prompt` + `completion` tokens must fit
    /// in `max_position_embeddings`; each comes with the name of the setting that sets it.
    pub fn check_positions(&self, prompt: (&str, usize), completion: (&str, usize)) -> anyhow::Result<()> {
        crate::train::position_budget::check_budgets(self.max_positions, &self.source, prompt, completion)
    }

    fn tokens(&self) -> TokenSpace<'_> {
        TokenSpace {
            eos_ids: self.tokenizer.eos_ids(),
            pad_id: self.tokenizer.pad_id(),
            usable_vocab: self.tokenizer.vocab_size(),
        }
    }

    /// Samples one completion per prompt (token ids); on a GPU its decode steps replay as
    /// CUDA graphs where the model allows ([`DecodeSteps::for_model`]).
    pub fn generate(
        &self,
        prompts: &[Vec<i64>],
        sampling: &SamplingConfig,
    ) -> anyhow::Result<(Vec<Completion>, GenerationStats)> {
        self.generate_with(
            prompts,
            sampling,
            DecodeSteps::for_model(&*self.model, self.device),
        )
    }

    /// [`Policy::generate`] with its decode steps run as `steps` says.
    pub fn generate_with(
        &self,
        prompts: &[Vec<i64>],
        sampling: &SamplingConfig,
        steps: DecodeSteps,
    ) -> anyhow::Result<(Vec<Completion>, GenerationStats)> {
        generate(
            &*self.model,
            (self.kind, self.device),
            prompts,
            &self.tokens(),
            sampling,
            steps,
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
        self.sampled_logprobs(prompts, completions, 1.0, entropy_grad)
    }

    /// [`Policy::logprobs`] of the distribution completions were sampled from at
    /// `temperature` (the logits divided by it), as the policy-gradient passes need: the
    /// ratio, KL and entropy are then of what was sampled (TRL and verl do the same).
    pub fn sampled_logprobs(
        &self,
        prompts: &[Vec<i64>],
        completions: &[Vec<i64>],
        temperature: f64,
        entropy_grad: bool,
    ) -> anyhow::Result<TokenLogProbs> {
        let batch =
            ContinuationBatch::new(prompts, completions, self.tokenizer.pad_id() as i64, self.device)?;
        completion_logprobs(&*self.model, &batch, temperature, entropy_grad)
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

    /// Log-probs under the base model, adapters off (the reference of a LoRA run), at
    /// `temperature` as [`Policy::sampled_logprobs`]; the adapters are on again afterwards,
    /// whatever happens.
    pub fn base_logprobs(
        &self,
        prompts: &[Vec<i64>],
        completions: &[Vec<i64>],
        temperature: f64,
    ) -> anyhow::Result<TokenLogProbs> {
        self.model
            .set_adapters_enabled(false)
            .with_context(|| format!("policy `{}`: cannot turn its LoRA adapters off", self.plugin))?;
        let result = self.sampled_logprobs(prompts, completions, temperature, false);
        self.model
            .set_adapters_enabled(true)
            .with_context(|| format!("policy `{}`: cannot turn its LoRA adapters on", self.plugin))?;
        result
    }

    /// Activation checkpointing of the passes with grad, as the config's `key` asks.
    pub fn set_gradient_checkpointing(&self, key: &str, enabled: bool) -> anyhow::Result<()> {
        // [model.lora]'s dropout, or an adapter directory's own (PEFT saves 0.05 or 0.1 often),
        // refused for the command that checkpoints (train's and sft's keys differ).
        if enabled && self.lora_dropout > 0.0 {
            bail!(
                "{key}: the LoRA adapters of {} have lora_dropout = {}: a recomputed layer would draw another dropout mask than its forward did; set [model.lora] lora_dropout = 0 (it overrides the adapter's) or turn checkpointing off",
                self.source.display(),
                self.lora_dropout
            );
        }
        self.model
            .set_gradient_checkpointing(enabled)
            .with_context(|| format!("{key}: policy `{}` cannot checkpoint its layers", self.plugin))
    }

    /// Trainable parameters, sharing storage with the model.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        self.model.parameters()
    }

    /// The policy for sampling and scoring only (eval, generate, benches): no weight needs a
    /// gradient, so the decoder may decode through packed copies of its frozen weights
    /// (crpo_plugins_policy::packed).
    pub fn for_inference(self) -> Self {
        for (_, parameter) in self.parameters() {
            let _ = parameter.set_requires_grad(false);
        }
        self
    }
}

/// Warns when the base an adapter is put on is not the local model directory its
/// adapter_config.json names: shapes alone cannot tell another seed's model, or one the
/// adapter was already merged into, from its own base (PEFT is silent here too).
pub fn warn_if_another_base(adapter: &Path, recorded_base: &Path, base: &Path, base_key: &str) {
    let same = recorded_base
        .canonicalize()
        .ok()
        .zip(base.canonicalize().ok())
        .is_some_and(|(a, b)| a == b);
    if recorded_base.join("config.json").exists() && !same {
        tracing::warn!(
            "the adapter {} was trained on {} (base_model_name_or_path in its adapter_config.json), not on {base_key} {}: on another model it is an adapter that model was not trained with",
            adapter.display(),
            recorded_base.display(),
            base.display()
        );
    }
}

/// The LoRA settings a run's `model.lora` loads with: an adapter to start from keeps its own
/// (see [`adapter_settings`]); and the base model that adapter's adapter_config.json names.
/// The memory plan counts these settings too.
pub fn lora_as_loaded(configured: &lora::LoraConfig) -> anyhow::Result<(lora::LoraConfig, Option<PathBuf>)> {
    match &configured.adapter {
        Some(dir) => {
            let (adapter, recorded_base) = lora::read_adapter_config(dir).context("model.lora.adapter")?;
            Ok((adapter_settings(configured, adapter, dir), Some(recorded_base)))
        }
        None => Ok((configured.clone(), None)),
    }
}

/// The settings an adapter directory is loaded with: its own rank, scale and layers (from its
/// adapter_config.json, as PEFT loads it: other ones would scale or place its matrices
/// differently from how they were trained), the run's dropout.
fn adapter_settings(
    configured: &lora::LoraConfig,
    adapter: lora::LoraConfig,
    dir: &Path,
) -> lora::LoraConfig {
    lora::LoraConfig {
        lora_dropout: configured.lora_dropout,
        adapter: Some(dir.to_path_buf()),
        ..adapter
    }
}

/// A warning when an adapter's own settings replace what the run's `model.lora` says.
fn warn_where_overridden(configured: &lora::LoraConfig, loaded: &lora::LoraConfig) {
    let overridden = overridden_settings(configured, loaded);
    if !overridden.is_empty() {
        tracing::warn!(
            "{} is a LoRA adapter loaded with its own settings, not model.lora's: {}",
            loaded.adapter.as_deref().unwrap_or(Path::new("")).display(),
            overridden.join(", ")
        );
    }
}

/// The placement settings (rank, scale, layers) `configured` sets away from PEFT's defaults
/// that the adapter's own `loaded` ones replace, as `key X (model.lora's Y)`. A key left at
/// its default was not asked for (as far as a parsed config can tell); the dropout is the
/// run's and the directory the adapter's, so neither is replaced.
fn overridden_settings(configured: &lora::LoraConfig, loaded: &lora::LoraConfig) -> Vec<String> {
    let fields = |c: &lora::LoraConfig| match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let defaults = serde_json::from_str::<lora::LoraConfig>("{}")
        .map(|d| fields(&d))
        .unwrap_or_default();
    let (configured, loaded) = (fields(configured), fields(loaded));
    let unset = serde_json::Value::Null;
    let mut keys: Vec<&String> = configured.keys().chain(loaded.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|key| !matches!(key.as_str(), "lora_dropout" | "adapter"))
        .filter_map(|key| {
            let mine = configured.get(key).unwrap_or(&unset);
            let theirs = loaded.get(key).unwrap_or(&unset);
            let default = defaults.get(key).unwrap_or(&unset);
            (mine != theirs && mine != default).then(|| format!("{key} {theirs} (model.lora's {mine})"))
        })
        .collect()
}

/// A warning for each `target_modules` name that adapted no layer of the loaded model.
fn warn_unmatched_targets(lora: &lora::LoraConfig, parameters: &[(String, tch::Tensor)]) {
    let adapted: Vec<&str> = parameters
        .iter()
        .filter_map(|(name, _)| lora::module_of(name).map(|(module, _)| module))
        .collect();
    for name in lora.unmatched_target_names(&adapted) {
        tracing::warn!(
            "model.lora.target_modules: `{name}` names no linear layer of this model; it adapts nothing"
        );
    }
}

/// What the engine needs of every loaded model, refused naming the plugin rather than met
/// mid-run: parameters to train and save (a library whose `parameters()` failed reports none),
/// and the layout of the key/value cache the engine allocates (only a library built before
/// sdk 1.4 keeps its own cache; without either, decoding would see one token at a time).
fn check_contract(model: &dyn PolicyModel, plugin: &str, origin: &Origin) -> anyhow::Result<()> {
    if model.parameters().is_empty() {
        bail!("policy `{plugin}` ({origin}) loaded a model with no parameters: its PolicyModel::parameters() returned none");
    }
    if model.cache_layout().is_none() && !origin.built_before(1, 4) {
        bail!(
            "policy `{plugin}` ({origin}) gives the engine no key/value cache layout (PolicyModel::cache_layout() returned None): a model built on crpo-policy-sdk 1.4 or later returns its layers, key/value heads and head size"
        );
    }
    Ok(())
}

/// A model with NaN or infinite weights cannot give a meaningful completion or score: refuse it
/// at load rather than print empty completions and accuracy 0.
fn check_weights_are_finite(model: &dyn PolicyModel, dir: &Path) -> anyhow::Result<()> {
    for (name, parameter) in model.parameters() {
        let finite = all_finite(&parameter)
            .with_context(|| format!("cannot check weight `{name}` of {}", dir.display()))?;
        if !finite {
            bail!(
                "{}: weight `{name}` holds non-finite values (NaN or ±inf): the model diverged in training or its file is damaged",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Every id the tokenizer can produce must have a row in the model's output (else the first
/// such token in a prompt or a sample would index past the embedding).
fn check_vocabulary(
    model: &dyn PolicyModel,
    tokenizer: &ChatTokenizer,
    dir: &Path,
    device: Device,
) -> anyhow::Result<()> {
    let _guard = tch::no_grad_guard();
    let probe = Tensor::from_slice(&[0i64]).view([1, 1]).to_device(device);
    let logits = model
        .forward(&probe, &probe.ones_like())
        .with_context(|| format!("{}: a one-token forward pass failed", dir.display()))?;
    let vocab = *logits.size().last().unwrap_or(&0);
    let (largest, token) = tokenizer.largest_id();
    if i64::from(largest) >= vocab {
        bail!(
            "{}: the tokenizer has id {largest} ({token}) but the model's vocabulary has {vocab} entries (config.json `vocab_size`): the tokenizer does not belong to these weights",
            dir.display()
        );
    }
    Ok(())
}

/// A model is read from a local directory: a path that does not exist (often a Hugging Face
/// hub id, which a TRL user passes to from_pretrained) is named as such, with `key` (the
/// setting or flag that gave it), before anything reads it.
pub fn require_local_model(dir: &Path, key: &str) -> anyhow::Result<()> {
    if !dir.exists() {
        bail!(
            "{key} {} does not exist: crpo reads a model from a local directory and downloads nothing (for a hub id, fetch it first, e.g. `hf download ORG/NAME --local-dir DIR`, and give DIR)",
            dir.display()
        );
    }
    Ok(())
}

/// A checkpoint (or sft's output directory) holds its model in `model/`: naming the
/// checkpoint is a slip worth a pointer, not "config.json: No such file".
fn refuse_a_checkpoint_for_its_model(dir: &Path) -> anyhow::Result<()> {
    let model = dir.join(crate::train::checkpoint::MODEL_DIR);
    let is_model = |d: &Path| d.join("config.json").exists() || d.join(lora::ADAPTER_CONFIG).exists();
    if !is_model(dir) && is_model(&model) {
        bail!(
            "{} is not a model directory but holds one: name {}",
            dir.display(),
            model.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adapter_s_settings_are_named_only_where_model_lora_asked_for_others() {
        let parse = |text: &str| serde_json::from_str::<lora::LoraConfig>(text).unwrap();
        let adapter =
            parse(r#"{"r": 4, "lora_alpha": 16, "lora_dropout": 0.1, "target_modules": ["q_proj"]}"#);
        // Only `adapter = DIR`: every other key at its default, nothing asked for.
        assert!(overridden_settings(&parse("{}"), &adapter).is_empty());
        assert!(overridden_settings(&parse(r#"{"lora_dropout": 0.05}"#), &adapter).is_empty());
        let asked = parse(r#"{"r": 32, "target_modules": ["q_proj", "v_proj"]}"#);
        assert_eq!(
            overridden_settings(&asked, &adapter),
            vec![
                "r 4 (model.lora's 32)".to_string(),
                r#"target_modules ["q_proj"] (model.lora's ["q_proj","v_proj"])"#.to_string()
            ]
        );
    }

    #[test]
    fn a_model_path_that_does_not_exist_is_named_as_no_local_directory() {
        let error = require_local_model(Path::new("Qwen/Qwen2.5-0.5B-Instruct"), "model.path")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("model.path Qwen/Qwen2.5-0.5B-Instruct does not exist")
                && error.contains("downloads nothing"),
            "{error}"
        );
        assert!(require_local_model(Path::new("."), "model.path").is_ok());
    }

    #[test]
    fn a_checkpoint_named_for_its_model_points_at_the_model() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("model")).unwrap();
        std::fs::write(dir.path().join("model/config.json"), "{}").unwrap();
        let error = refuse_a_checkpoint_for_its_model(dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("is not a model directory but holds one: name"),
            "{error}"
        );
        assert!(refuse_a_checkpoint_for_its_model(&dir.path().join("model")).is_ok());
    }
    use crpo_policy_sdk::{CacheLayout, KvCache};

    /// A model with one weight, or none, and no cache layout.
    struct NoLayout(Vec<(String, Tensor)>);

    impl PolicyModel for NoLayout {
        fn cache_layout(&self) -> Option<CacheLayout> {
            None
        }
        fn forward(&self, input_ids: &Tensor, _: &Tensor) -> crpo_sdk::Result<Tensor> {
            Ok(input_ids.zeros_like())
        }
        fn forward_cached(
            &self,
            input_ids: &Tensor,
            _: &Tensor,
            _: &mut KvCache,
        ) -> crpo_sdk::Result<Tensor> {
            Ok(input_ids.zeros_like())
        }
        fn parameters(&self) -> Vec<(String, Tensor)> {
            self.0
                .iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect()
        }
        fn save(&self, _: &Path) -> crpo_sdk::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_model_without_parameters_or_cache_layout_is_refused_unless_it_predates_sdk_1_4() {
        let weight = || vec![("w".to_string(), Tensor::zeros([2], (Kind::Float, Device::Cpu)))];
        let library = |sdk: &str| Origin::Library {
            path: "libp.so".into(),
            library: "p 0.1.0".into(),
            sdk: sdk.into(),
        };
        let error = check_contract(&NoLayout(weight()), "p", &Origin::Builtin)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("policy `p` (builtin) gives the engine no key/value cache layout"),
            "{error}"
        );
        assert!(check_contract(&NoLayout(weight()), "p", &library("1.7.0")).is_err());
        assert!(
            check_contract(&NoLayout(weight()), "p", &library("1.3.0")).is_ok(),
            "a 1.3 library keeps its own cache"
        );
        let error = check_contract(&NoLayout(Vec::new()), "p", &library("1.3.0"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("no parameters"), "{error}");
    }
}
