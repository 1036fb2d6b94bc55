//! The run config (`run.toml`): what `train`, `sft` and `eval` read. Every table denies
//! unknown keys, so a typo is an error naming the key, its line and the file, never a
//! silently ignored setting. Every default lives here, next to its key (docs/config.md
//! lists them).

use crate::plugins::isolation::{Execution, Isolation};
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(default)]
    pub run: RunSection,
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub reward: RewardSection,
    #[serde(default)]
    pub algorithm: AlgorithmConfig,
    #[serde(default)]
    pub sft: SftConfig,
    #[serde(default)]
    pub eval: EvalSection,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    /// Where checkpoints, metrics and samples go.
    pub output_dir: PathBuf,
    /// Seeds data order and sampling; every random draw derives from it and the step.
    pub seed: u64,
    /// Optimizer steps of `train` (one step = one batch of rollouts).
    pub max_steps: usize,
    /// Write a checkpoint every N steps and at the end; 0 writes none (benchmarks: such a run
    /// cannot be resumed).
    pub save_steps: usize,
    /// Checkpoints kept (the oldest are deleted); at least 1.
    pub save_total_limit: usize,
    /// Write completions with their scores (samples.jsonl, TensorBoard's text) every
    /// `sample_steps` steps (TRL's `log_completions`; false writes none).
    pub log_completions: bool,
    /// Every N steps, and the last of a run shorter than N (0 = never).
    pub sample_steps: usize,
    /// Completions written each time (`sample_count` is accepted too).
    #[serde(rename = "num_completions_to_print", alias = "sample_count")]
    pub sample_count: usize,
    /// A summary line every N steps (and at the first and last); metrics.jsonl and TensorBoard
    /// get every step whatever this is.
    pub logging_steps: usize,
    /// Evaluate on the held-out set every N steps and at the end (0 = never); results go to
    /// metrics.jsonl (`eval.<decoding>`), TensorBoard (`eval/<decoding>/…`) and the report.
    pub eval_steps: usize,
    /// How those evaluations decode: `greedy` (one completion at temperature 0) and/or
    /// `sampled` (the [eval] temperature and `num_generations_eval`, majority-voted).
    pub eval_decodings: Vec<EvalDecoding>,
    /// More plugin directories, searched with `--plugins`.
    pub plugin_dirs: Vec<PathBuf>,
    /// Libraries that may be loaded, by file name and sha256 (checked before any of their
    /// code runs); with pins, an unpinned library is refused. `crpo-host plugins --verify`
    /// prints them.
    pub plugin_pins: Vec<PluginPin>,
    /// Load plugin files or directories that others can write to (refused by default).
    pub allow_insecure_plugins: bool,
    /// Stop the run after this many consecutive steps whose loss or gradients were not finite
    /// (each is skipped: weights and optimizer state untouched).
    pub max_nonfinite_steps: usize,
    /// Refuse to start a run whose memory plan (train/memory_plan.rs) is above the device's
    /// free memory.
    pub memory_check: bool,
    /// Distributed runs: seconds any collective (and the start-up rendezvous) may wait for
    /// the other ranks before the run stops naming the rank that is dead or behind
    /// (TrainingArguments' `ddp_timeout`; the same default, 30 minutes).
    pub ddp_timeout: u64,
}

/// A decoding for evaluations during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalDecoding {
    Greedy,
    Sampled,
}

impl EvalDecoding {
    pub fn name(self) -> &'static str {
        match self {
            EvalDecoding::Greedy => "greedy",
            EvalDecoding::Sampled => "sampled",
        }
    }

    /// The [eval] settings this decoding runs with.
    pub fn settings(self, eval: &EvalSection) -> EvalSection {
        match self {
            EvalDecoding::Greedy => EvalSection {
                samples: 1,
                temperature: 0.0,
                ..eval.clone()
            },
            EvalDecoding::Sampled => eval.clone(),
        }
    }
}

/// A library trusted by its content: `crpo-host plugins --verify` prints these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginPin {
    /// The library's file name (e.g. `libmy_objective.so`).
    pub file: String,
    /// Its sha256, hex.
    pub sha256: String,
}

/// The most fresh workers a call may be retried on.
const MAX_RETRIES: usize = 10;
/// The longest `run.ddp_timeout`: a week.
const MAX_DDP_TIMEOUT_S: u64 = 7 * 24 * 3600;

/// Pins that cannot mean anything are refused by key: a sha256 that is not 64 hex digits
/// (it read as "the file changed since it was pinned"), one file pinned to two hashes (the
/// first won, so the outcome depended on order).
fn check_plugin_pins(pins: &[PluginPin]) -> anyhow::Result<()> {
    for (i, pin) in pins.iter().enumerate() {
        if pin.sha256.len() != 64 || !pin.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!(
                "run.plugin_pins[{i}].sha256 = {:?} is not a sha256 (64 hex digits); `crpo-host plugins --verify` prints each library's",
                pin.sha256
            );
        }
        if let Some(other) = pins[..i]
            .iter()
            .find(|p| p.file == pin.file && !p.sha256.eq_ignore_ascii_case(&pin.sha256))
        {
            bail!(
                "run.plugin_pins pins {} twice, to {} and to {}: keep the one the library has",
                pin.file,
                other.sha256,
                pin.sha256
            );
        }
    }
    Ok(())
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            output_dir: PathBuf::from("runs/run"),
            seed: 0,
            max_steps: 100,
            save_steps: 50,
            save_total_limit: 2,
            sample_steps: 10,
            log_completions: true,
            sample_count: 4,
            logging_steps: 10,
            eval_steps: 0,
            eval_decodings: vec![EvalDecoding::Greedy],
            plugin_dirs: Vec::new(),
            plugin_pins: Vec::new(),
            allow_insecure_plugins: false,
            max_nonfinite_steps: 3,
            memory_check: true,
            ddp_timeout: 1800,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Policy plugin (`qwen2` is built in: Qwen2 and Llama directories).
    #[serde(default = "default_policy")]
    pub policy: String,
    /// A Hugging Face model directory.
    pub path: PathBuf,
    /// The policy plugin's options.
    #[serde(default)]
    pub options: toml::Table,
    /// auto | cpu | cuda | cuda:N
    #[serde(default = "default_auto")]
    pub device: String,
    /// auto (bf16 on CUDA, f32 on CPU) | f32 | bf16
    #[serde(default = "default_auto")]
    pub dtype: String,
    /// LoRA adapters (PEFT's settings): the base weights stay frozen, only the adapters train,
    /// and the reference is the base (adapters off). docs/memory.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<crpo_policy_sdk::lora::LoraConfig>,
}

fn default_policy() -> String {
    "qwen2".into()
}

fn default_auto() -> String {
    "auto".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Dataset plugin: `medqa` and the other built-in readers, or a loaded one.
    #[serde(default = "default_dataset")]
    pub dataset: String,
    /// Training file.
    pub path: PathBuf,
    /// The reader's options.
    #[serde(default)]
    pub options: toml::Table,
    /// A separate evaluation file (same reader). Without it, `eval_fraction` of the training
    /// file is held out.
    #[serde(default)]
    pub eval_path: Option<PathBuf>,
    /// Share of examples held out for evaluation when there is no `eval_path`.
    #[serde(default = "default_eval_fraction")]
    pub eval_fraction: f64,
    /// Shuffle the training examples (seeded by `run.seed` and the epoch).
    #[serde(default = "default_true")]
    pub shuffle: bool,
    /// Skip and count malformed records instead of stopping at the first.
    #[serde(default)]
    pub skip_malformed: bool,
    /// The user message: `{question}` and `{options}` (one `A. text` line per option) are
    /// replaced. Examples whose prompt is already chat messages are used as they are.
    #[serde(default = "default_prompt_template")]
    pub prompt_template: String,
    /// The system message; the reward preset's when unset.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Where earlier configs set `max_prompt_length` (now in [algorithm], as TRL has it);
    /// still read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prompt_length: Option<usize>,
    /// What a prompt over `algorithm.max_prompt_length` does: `left` cuts the start of the user's
    /// content (never the chat template or the system prompt), `skip` leaves the example out,
    /// `error` stops with its id. Truncated and skipped prompts are counted and warned of.
    #[serde(default)]
    pub prompt_truncation: PromptTruncation,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptTruncation {
    #[default]
    Left,
    Skip,
    Error,
}

fn default_dataset() -> String {
    "medqa".into()
}
fn default_eval_fraction() -> f64 {
    0.1
}
fn default_true() -> bool {
    true
}
/// A prompt template must place the question, and may name only `{question}` and `{options}`:
/// without the question every prompt is the same text, and an unknown placeholder would reach
/// the model as written. Braces after a letter are a LaTeX argument (`\boxed{X}`), not one.
fn check_prompt_template(template: &str) -> anyhow::Result<()> {
    let placeholder = regex::Regex::new(r"(?:^|[^A-Za-z])\{([^{}\s]*)\}").expect("a valid expression");
    for found in placeholder.captures_iter(template) {
        let name = &found[1];
        if name != "question" && name != "options" {
            bail!("data.prompt_template: `{{{name}}}` is not a placeholder (only {{question}} and {{options}} are replaced)");
        }
    }
    if !template.contains("{question}") {
        bail!(
            "data.prompt_template {template:?} has no {{question}}: every prompt would be the same text (the default is \"{{question}}\\n\\n{{options}}\")"
        );
    }
    Ok(())
}

pub fn default_prompt_template() -> String {
    "{question}\n\n{options}".into()
}
/// `algorithm.max_prompt_length` when neither section sets it.
pub const DEFAULT_MAX_PROMPT_LENGTH: usize = 512;

/// The most tokens a prompt or completion budget may name: 16M, hundreds of times any
/// model's context.
pub const MAX_TOKENS: usize = 1 << 24;
/// The most rows (completions, prompts, batch sizes) a setting may name.
pub const MAX_ROWS: usize = 1 << 20;

/// The reward: a preset, objectives of one's own, or a preset plus more objectives.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardSection {
    /// A reward preset of the built-in crates: `crpo`, `crpo-paper`, `crpo-full`, `grpo`, `crpo-code`,
    /// `grpo-baseline` (docs/objectives.md).
    #[serde(default)]
    pub preset: Option<String>,
    #[serde(default)]
    pub objectives: Vec<ObjectiveConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveConfig {
    /// The reward plugin.
    pub plugin: String,
    /// The name in metrics (defaults to the plugin's); lets one plugin serve twice.
    #[serde(default)]
    pub name: Option<String>,
    /// Defaults to the plugin's default weight. Read as f64 so a value an f32 cannot hold is
    /// refused as written (it read as ±inf).
    #[serde(default)]
    pub weight: Option<f64>,
    #[serde(default)]
    pub options: toml::Table,
    /// `in_process` (default) or `process`: run the plugin in a child `crpo-host` worker, so a
    /// crash or a hang there fails the step (after `retries`) instead of the trainer.
    #[serde(default)]
    pub isolation: Isolation,
    /// Per-call limit in seconds; default 300 for a worker or a plugin not marked cheap, none
    /// for a cheap in-process one.
    #[serde(default)]
    pub timeout_s: Option<f64>,
    /// With `isolation = "process"`: fresh workers tried after one crashed or hung.
    #[serde(default)]
    pub retries: usize,
    /// Where the config file gives this entry (`run.toml:23`), for errors that come later,
    /// from the plugin (its options); not a setting.
    #[serde(skip)]
    pub place: Option<String>,
}

impl RewardSection {
    /// Each `[[reward.objectives]]` entry's file and line, when the file writes each as a
    /// table header of its own (an inline array is left unplaced).
    fn mark_places(&mut self, path: &Path, text: &str) {
        let headers: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, line)| {
                line.trim_start()
                    .strip_prefix("[[")
                    .is_some_and(|rest| rest.trim_start().starts_with("reward.objectives"))
            })
            .map(|(index, _)| index + 1)
            .collect();
        if headers.len() == self.objectives.len() {
            for (objective, line) in self.objectives.iter_mut().zip(headers) {
                objective.place = Some(format!("{}:{line}", path.display()));
            }
        }
    }
}

impl ObjectiveConfig {
    pub fn execution(&self) -> Execution {
        Execution {
            isolation: self.isolation,
            timeout: self.timeout_s.map(Duration::from_secs_f64),
            retries: self.retries,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// Token mean per sequence, then mean over sequences.
    Grpo,
    /// Token mean over the micro-batch.
    Bnpo,
    /// Token sum over (sequences × max_completion_length).
    DrGrpo,
    /// Token mean over every token of the optimizer step (all accumulated micro-batches).
    Dapo,
}

/// TRL's `true` and `false` are read as `group` and `none`, as GRPOConfig reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "ScaleRewardsAsWritten")]
pub enum ScaleRewards {
    Group,
    Batch,
    None,
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "expected \"group\", \"batch\" or \"none\" (or TRL's true / false)"
)]
enum ScaleRewardsAsWritten {
    Name(String),
    Trl(bool),
}

impl TryFrom<ScaleRewardsAsWritten> for ScaleRewards {
    type Error = String;

    fn try_from(written: ScaleRewardsAsWritten) -> Result<Self, String> {
        match written {
            ScaleRewardsAsWritten::Trl(true) => Ok(ScaleRewards::Group),
            ScaleRewardsAsWritten::Trl(false) => Ok(ScaleRewards::None),
            ScaleRewardsAsWritten::Name(name) => match name.as_str() {
                "group" => Ok(ScaleRewards::Group),
                "batch" => Ok(ScaleRewards::Batch),
                "none" => Ok(ScaleRewards::None),
                _ => Err(format!(
                    "unknown scale_rewards `{name}`: expected \"group\", \"batch\" or \"none\" (or TRL's true / false)"
                )),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// The paper's: weighted sum of objectives, then group-normalised.
    SumThenNormalize,
    /// GDPO: each objective normalised in its group, weighted sum, then batch-normalised.
    NormalizeThenSum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    Constant,
    Linear,
    Cosine,
}

/// The CRPO algorithm. Names follow TRL's GRPOConfig where they fit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlgorithmConfig {
    /// G: completions sampled per prompt.
    pub num_generations: usize,
    /// Prompts per step (each gives a group of G).
    pub prompts_per_step: usize,
    /// Completions generated together: a step's groups are generated in batches of at most
    /// this many rows (whole groups, at least one), which bounds the rollout's KV cache.
    pub rollout_batch_size: usize,
    /// PPO epochs over each batch of rollouts.
    pub num_iterations: usize,
    /// Completions per forward/backward pass (TRL's name; `mini_batch_size` is accepted too).
    #[serde(rename = "per_device_train_batch_size", alias = "mini_batch_size")]
    pub mini_batch_size: usize,
    /// Micro-batches per optimizer update.
    pub gradient_accumulation_steps: usize,
    /// Run an update's completions through the model in order of length, so a pass pads
    /// little (the loss is still that of the nominal micro-batches; Hugging Face's name).
    pub group_by_length: bool,
    /// At most this many padded prompt + completion tokens per forward pass (passes are cut
    /// further; a longer completion runs alone). Unset: per_device_train_batch_size alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_per_micro_batch: Option<usize>,
    /// Keep only each decoder layer's input through the forward pass and recompute the layer
    /// in the backward (TRL's name): activations fall to about 1/10 for ~1/3 more compute.
    pub gradient_checkpointing: bool,
    pub learning_rate: f64,
    /// Linear warm-up, in optimizer updates.
    pub warmup_steps: usize,
    pub lr_scheduler_type: LrSchedule,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    pub weight_decay: f64,
    /// Gradients are scaled so their global L2 norm is at most this (0 = no clipping).
    pub max_grad_norm: f64,
    /// KL coefficient (k3 estimator). 0 loads no reference model.
    pub beta: f64,
    /// Lower clip: ratio ≥ 1 − epsilon.
    pub epsilon: f64,
    /// Upper clip: ratio ≤ 1 + epsilon_high (clip-higher); defaults to epsilon.
    pub epsilon_high: Option<f64>,
    /// Entropy bonus coefficient (TRL's `entropy_coef`; `entropy_coeff` is accepted too).
    #[serde(rename = "entropy_coef", alias = "entropy_coeff")]
    pub entropy_coeff: f64,
    pub loss_type: LossType,
    pub scale_rewards: ScaleRewards,
    /// How objectives combine (TRL's name; `aggregation` is accepted too).
    #[serde(rename = "multi_objective_aggregation", alias = "aggregation")]
    pub aggregation: Aggregation,
    /// Leave completions cut at `max_completion_length` out of the loss (TRL's): a cut
    /// completion's reward says little about its tokens.
    pub mask_truncated_completions: bool,
    /// Drop groups whose rewards all tie and sample more prompts to refill the batch.
    pub dynamic_sampling: bool,
    /// Most extra sampling rounds per step under dynamic sampling.
    pub max_resample_rounds: usize,
    /// DAPO's soft overlong penalty over the last `overlong_buffer_length` tokens of the budget
    /// (0 = off); reported as the objective `overlong`.
    pub overlong_buffer_length: usize,
    pub overlong_penalty_factor: f32,
    pub temperature: f64,
    pub top_p: f64,
    /// 0 = no top-k filter.
    pub top_k: usize,
    pub max_completion_length: usize,
    /// Prompts longer than this many tokens are handled per `data.prompt_truncation`
    /// (default 512; `data.max_prompt_length` is read too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prompt_length: Option<usize>,
    /// A step whose KL to the reference (per token) is above this logs a warning (0 = never).
    pub kl_warning_threshold: f64,
    /// EOS is not sampled before this many tokens (0 = no minimum); for fixed-length
    /// benchmarks, as transformers' `min_new_tokens`.
    pub min_completion_length: usize,
}

impl Default for AlgorithmConfig {
    fn default() -> Self {
        AlgorithmConfig {
            num_generations: 8,
            prompts_per_step: 8,
            rollout_batch_size: 64,
            num_iterations: 1,
            mini_batch_size: 16,
            gradient_accumulation_steps: 4,
            group_by_length: true,
            max_tokens_per_micro_batch: None,
            gradient_checkpointing: false,
            learning_rate: 1e-6,
            warmup_steps: 0,
            lr_scheduler_type: LrSchedule::Constant,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            beta: 0.001,
            epsilon: 0.2,
            epsilon_high: None,
            entropy_coeff: 0.0,
            loss_type: LossType::Dapo,
            scale_rewards: ScaleRewards::Group,
            aggregation: Aggregation::SumThenNormalize,
            mask_truncated_completions: false,
            dynamic_sampling: false,
            max_resample_rounds: 3,
            overlong_buffer_length: 0,
            overlong_penalty_factor: 1.0,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_completion_length: 256,
            max_prompt_length: None,
            kl_warning_threshold: 1.0,
            min_completion_length: 0,
        }
    }
}

impl AlgorithmConfig {
    /// Optimizer updates a step makes (per rank: each takes `per_device_train_batch_size` ×
    /// `gradient_accumulation_steps` of its completions, the last what is left), times
    /// `num_iterations`.
    pub fn updates_per_step(&self, world_size: usize) -> usize {
        (self.prompts_per_step * self.num_generations)
            .div_ceil(self.mini_batch_size * world_size)
            .div_ceil(self.gradient_accumulation_steps)
            * self.num_iterations
    }

    /// The optimizer's settings as these keys give them.
    pub fn adam_settings(&self) -> super::optimizer::AdamWSettings {
        super::optimizer::AdamWSettings {
            beta1: self.adam_beta1,
            beta2: self.adam_beta2,
            eps: self.adam_epsilon,
            weight_decay: self.weight_decay,
        }
    }

    pub fn epsilon_high(&self) -> f64 {
        self.epsilon_high.unwrap_or(self.epsilon)
    }

    /// The schedule's learning rate before optimizer update `update` of `total_updates`.
    pub fn learning_rate_at(&self, update: usize, total_updates: usize) -> f64 {
        super::optimizer::learning_rate(
            self.learning_rate,
            self.lr_scheduler_type,
            self.warmup_steps,
            update,
            total_updates,
        )
    }

    /// Prompts generated together: whole groups within `rollout_batch_size`, at least one.
    pub fn prompts_per_rollout_batch(&self) -> usize {
        (self.rollout_batch_size / self.num_generations.max(1)).max(1)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.num_generations < 2 {
            bail!(
                "algorithm.num_generations must be at least 2 (it is {}): advantages compare completions within a group",
                self.num_generations
            );
        }
        let positive = [
            ("prompts_per_step", self.prompts_per_step),
            ("rollout_batch_size", self.rollout_batch_size),
            ("num_iterations", self.num_iterations),
            ("per_device_train_batch_size", self.mini_batch_size),
            ("gradient_accumulation_steps", self.gradient_accumulation_steps),
            ("max_completion_length", self.max_completion_length),
            (
                "max_tokens_per_micro_batch",
                self.max_tokens_per_micro_batch.unwrap_or(1),
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                bail!("algorithm.{key} must be at least 1");
            }
        }
        if !self.learning_rate.is_finite() || self.learning_rate <= 0.0 {
            bail!(
                "algorithm.learning_rate must be a finite number > 0 (it is {})",
                self.learning_rate
            );
        }
        if !self.temperature.is_finite() {
            bail!(
                "algorithm.temperature must be a finite number > 0 (it is {}): sampling divides the logits by it",
                self.temperature
            );
        }
        if self.temperature < 0.0 {
            bail!(
                "algorithm.temperature must be > 0 (it is {}): logits are divided by it",
                self.temperature
            );
        }
        if self.temperature == 0.0 {
            bail!(
                "algorithm.temperature must be > 0 (it is {}): at 0 every completion of a group is the same, every group ties and nothing is learned",
                self.temperature
            );
        }
        crate::rollout::sampling::check_temperature(self.temperature, "algorithm.temperature")?;
        if self.top_k == 1 {
            bail!(
                "algorithm.top_k = 1 keeps only the likeliest token: every completion of a group is the same, every group ties and nothing is learned (0 turns the filter off)"
            );
        }
        if !self.kl_warning_threshold.is_finite() || self.kl_warning_threshold < 0.0 {
            bail!("algorithm.kl_warning_threshold must be a finite number ≥ 0");
        }
        if self.overlong_buffer_length > self.max_completion_length {
            bail!("algorithm.overlong_buffer_length cannot exceed algorithm.max_completion_length");
        }
        if self.min_completion_length > self.max_completion_length {
            bail!(
                "algorithm.min_completion_length ({}) cannot exceed algorithm.max_completion_length ({})",
                self.min_completion_length,
                self.max_completion_length
            );
        }
        if !self.overlong_penalty_factor.is_finite() || self.overlong_penalty_factor < 0.0 {
            bail!(
                "algorithm.overlong_penalty_factor must be a finite number ≥ 0 (it is {})",
                self.overlong_penalty_factor
            );
        }
        // Far above any real run; beyond them sizes multiply past what memory could hold (and
        // past what the arithmetic of a plan or a position check can count).
        for (key, value, most) in [
            ("max_completion_length", self.max_completion_length, MAX_TOKENS),
            (
                "max_prompt_length",
                self.max_prompt_length.unwrap_or(0),
                MAX_TOKENS,
            ),
            ("min_completion_length", self.min_completion_length, MAX_TOKENS),
            ("num_generations", self.num_generations, MAX_ROWS),
            ("prompts_per_step", self.prompts_per_step, MAX_ROWS),
            ("rollout_batch_size", self.rollout_batch_size, MAX_ROWS),
            ("per_device_train_batch_size", self.mini_batch_size, MAX_ROWS),
            (
                "gradient_accumulation_steps",
                self.gradient_accumulation_steps,
                MAX_ROWS,
            ),
            ("num_iterations", self.num_iterations, MAX_ROWS),
        ] {
            if value > most {
                bail!("algorithm.{key} = {value} is beyond what any run can hold (at most {most})");
            }
        }
        for (key, value) in [
            ("beta", self.beta),
            ("epsilon", self.epsilon),
            ("entropy_coef", self.entropy_coeff),
            ("weight_decay", self.weight_decay),
            ("max_grad_norm", self.max_grad_norm),
        ] {
            if !value.is_finite() || value < 0.0 {
                bail!("algorithm.{key} must be a finite number ≥ 0 (it is {value})");
            }
        }
        for (key, value) in [("adam_beta1", self.adam_beta1), ("adam_beta2", self.adam_beta2)] {
            if !(0.0..1.0).contains(&value) {
                bail!("algorithm.{key} must be in [0, 1) (it is {value})");
            }
        }
        if !self.adam_epsilon.is_finite() || self.adam_epsilon <= 0.0 {
            bail!("algorithm.adam_epsilon must be a finite number > 0");
        }
        if self.epsilon > 1.0 {
            bail!(
                "algorithm.epsilon must be at most 1 (it is {}): the ratio's lower clip is 1 - epsilon, and a ratio is never below 0",
                self.epsilon
            );
        }
        if !self.epsilon_high().is_finite() || self.epsilon_high() < 0.0 {
            bail!("algorithm.epsilon_high must be a finite number ≥ 0");
        }
        if self.top_p.is_nan() || self.top_p <= 0.0 || self.top_p > 1.0 {
            bail!("algorithm.top_p must be in (0, 1]");
        }
        Ok(())
    }
}

/// Cold-start supervised fine-tuning on reference completions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftConfig {
    pub learning_rate: f64,
    /// Passes over the data (TRL's name; `epochs` is accepted too).
    #[serde(rename = "num_train_epochs", alias = "epochs")]
    pub epochs: usize,
    /// Examples per optimizer update (TRL's name; `batch_size` is accepted too).
    #[serde(rename = "per_device_train_batch_size", alias = "batch_size")]
    pub batch_size: usize,
    pub warmup_steps: usize,
    /// The learning-rate schedule (default: `algorithm.lr_scheduler_type`).
    pub lr_scheduler_type: Option<LrSchedule>,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    /// Reference completions longer than this many tokens are cut.
    pub max_completion_length: usize,
    /// Where the fine-tuned model goes (default: `<output_dir>/sft`).
    pub output_dir: Option<PathBuf>,
    /// Recompute each decoder layer in the backward instead of keeping its activations (as
    /// `algorithm.gradient_checkpointing`).
    pub gradient_checkpointing: bool,
}

impl Default for SftConfig {
    fn default() -> Self {
        SftConfig {
            learning_rate: 1e-4,
            epochs: 1,
            batch_size: 8,
            warmup_steps: 0,
            lr_scheduler_type: None,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            max_completion_length: 512,
            output_dir: None,
            gradient_checkpointing: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Samples per question; with more than one, the answer is their majority vote (TRL's
    /// `num_generations_eval`; `samples` is accepted too).
    #[serde(rename = "num_generations_eval", alias = "samples")]
    pub samples: usize,
    /// 0 decodes greedily (with one sample).
    pub temperature: f64,
    pub max_completion_length: usize,
    /// Questions per generation batch.
    pub batch_size: usize,
    /// Evaluate at most this many questions (0 = all).
    pub limit: usize,
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection {
            samples: 1,
            temperature: 0.0,
            max_completion_length: 256,
            batch_size: 16,
            limit: 0,
        }
    }
}

impl RunConfig {
    /// Reads and checks a config; relative paths are taken from the config's directory.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let text = String::from_utf8(bytes).map_err(|error| {
            let bytes = error.as_bytes();
            // Windows editors save "Unicode" as UTF-16: a byte-order mark, or every other byte 0.
            let utf16 = bytes.starts_with(&[0xff, 0xfe])
                || bytes.starts_with(&[0xfe, 0xff])
                || bytes.iter().take(64).filter(|&&b| b == 0).count() >= 8;
            let line = 1 + bytes[..error.utf8_error().valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            match utf16 {
                true => anyhow::anyhow!("{} is UTF-16 text: save it as UTF-8", path.display()),
                false => anyhow::anyhow!("{}:{line}: not UTF-8 text", path.display()),
            }
        })?;
        let mut config = Self::parse(&text).with_context(|| format!("in {}", path.display()))?;
        config.reward.mark_places(path, &text);
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// This config with every relative path made absolute from the working directory: what a
    /// checkpoint's config.toml records, so that it names the same files from anywhere (as
    /// `--config` from its checkpoint, it had read `model` inside the checkpoint).
    /// (A working directory that was deleted leaves them as they are.)
    pub fn with_absolute_paths(&self) -> Self {
        let mut absolute = self.clone();
        if let Ok(cwd) = std::env::current_dir() {
            absolute.resolve_paths(&cwd);
        }
        absolute
    }

    /// Parses and validates TOML text (paths left as written).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        refuse_synonyms_together(text)?;
        let config: RunConfig =
            toml::from_str(text).map_err(|error| match negative_count_hint(&error, text) {
                Some(hint) => anyhow::anyhow!("{error}{hint}"),
                None => with_section_hint(error),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Relative paths from `base` (the config file's directory); `~/…` from the home
    /// directory, as a shell would expand it (a TOML string is not expanded by any shell).
    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            *p = crate::home_path::expand_home(p);
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.run.output_dir);
        self.run.plugin_dirs.iter_mut().for_each(resolve);
        resolve(&mut self.model.path);
        if let Some(adapter) = self.model.lora.as_mut().and_then(|lora| lora.adapter.as_mut()) {
            resolve(adapter);
        }
        resolve(&mut self.data.path);
        if let Some(p) = self.data.eval_path.as_mut() {
            resolve(p);
        }
        if let Some(p) = self.sft.output_dir.as_mut() {
            resolve(p);
        }
    }

    /// `[model.lora]`'s dropout under the command's activation checkpointing (`key`), refused
    /// before anything loads: a recomputed layer would draw another mask than its forward did.
    /// Each command asks with its own key: one config may checkpoint sft and not train.
    pub fn check_lora_dropout(&self, key: &str, checkpointing: bool) -> anyhow::Result<()> {
        match &self.model.lora {
            Some(lora) if checkpointing && lora.lora_dropout > 0.0 => bail!(
                "{key} = true with model.lora.lora_dropout = {}: a recomputed layer would draw another dropout mask than its forward did; set one of them off",
                lora.lora_dropout
            ),
            _ => Ok(()),
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.algorithm.validate()?;
        check_prompt_template(&self.data.prompt_template)?;
        if self.run.save_total_limit == 0 {
            bail!("run.save_total_limit must be at least 1");
        }
        for (key, dir) in [
            ("run.output_dir", Some(&self.run.output_dir)),
            ("sft.output_dir", self.sft.output_dir.as_ref()),
        ] {
            if dir.is_some_and(|dir| dir.as_os_str().is_empty()) {
                bail!("{key} is empty: name the run's directory (an empty one wrote into wherever the command ran)");
            }
        }
        if self.run.eval_steps > 0 {
            if self.run.eval_decodings.is_empty() {
                bail!("run.eval_decodings needs \"greedy\", \"sampled\" or both when run.eval_steps is set");
            }
            if self.data.eval_path.is_none() && self.data.eval_fraction == 0.0 {
                bail!(
                    "run.eval_steps = {} evaluates the held-out set, but there is none: set data.eval_path, or data.eval_fraction above 0",
                    self.run.eval_steps
                );
            }
            if let Some(twice) = (1..self.run.eval_decodings.len())
                .find(|&i| self.run.eval_decodings[..i].contains(&self.run.eval_decodings[i]))
            {
                bail!(
                    "run.eval_decodings names \"{}\" twice: each decoding is evaluated once per eval step",
                    self.run.eval_decodings[twice].name()
                );
            }
            if self.run.eval_decodings.contains(&EvalDecoding::Sampled) && self.eval.temperature <= 0.0 {
                bail!(
                    "run.eval_decodings has \"sampled\" but eval.temperature is {}: set it above 0",
                    self.eval.temperature
                );
            }
        }
        if self.run.max_nonfinite_steps == 0 {
            bail!("run.max_nonfinite_steps must be at least 1");
        }
        check_plugin_pins(&self.run.plugin_pins)?;
        if self.run.ddp_timeout == 0 {
            bail!("run.ddp_timeout must be at least 1 (seconds a collective may wait for the other ranks)");
        }
        // A chosen cap: far larger values overflowed libtorch's nanosecond timeouts (a start
        // that failed at once, or hung), and a rank that waits a week is lost anyway.
        if self.run.ddp_timeout > MAX_DDP_TIMEOUT_S {
            bail!(
                "run.ddp_timeout is {}, at most {MAX_DDP_TIMEOUT_S} seconds (a week): a rank silent that long is lost, and far larger values overflow libtorch's timeouts",
                self.run.ddp_timeout
            );
        }
        if let Some(lora) = &self.model.lora {
            lora.validate().map_err(|e| match e {
                crpo_sdk::PluginError::InvalidOption { option, message } => {
                    anyhow::anyhow!("model.{option}: {message}")
                }
                other => anyhow::anyhow!("model.lora: {other}"),
            })?;
        }
        if let (Some(a), Some(d)) = (self.algorithm.max_prompt_length, self.data.max_prompt_length) {
            if a != d {
                bail!("algorithm.max_prompt_length ({a}) and data.max_prompt_length ({d}) disagree: set it in [algorithm] only");
            }
        }
        if self.max_prompt_length() == 0 {
            bail!("algorithm.max_prompt_length must be at least 1");
        }
        if !(0.0..1.0).contains(&self.data.eval_fraction) {
            bail!(
                "data.eval_fraction must be in [0, 1) (it is {})",
                self.data.eval_fraction
            );
        }
        if self.reward.preset.is_none() && self.reward.objectives.is_empty() {
            bail!("[reward] needs a `preset` or at least one [[reward.objectives]]");
        }
        for objective in &self.reward.objectives {
            if objective
                .name
                .as_deref()
                .is_some_and(|name| name.trim().is_empty())
            {
                bail!(
                    "[[reward.objectives]] `{}`: name is blank; it names the objective in metrics, the report and TensorBoard (leave it out for the plugin's name)",
                    objective.plugin
                );
            }
            if let Some(weight) = objective.weight {
                if !crpo_sdk::options::fits_f32(weight) {
                    bail!(
                        "[[reward.objectives]] `{}`: weight {weight:e} is not a finite number within ±3.4e38",
                        objective.plugin
                    );
                }
            }
            if let Some(timeout) = objective.timeout_s {
                if crate::plugins::isolation::timeout_of(timeout).is_none() {
                    bail!(
                        "[[reward.objectives]] `{}`: timeout_s must be a number of seconds above 0 and at most 1e9 (it is {timeout:e})",
                        objective.plugin
                    );
                }
            }
            if objective.retries > MAX_RETRIES {
                bail!(
                    "[[reward.objectives]] `{}`: retries is {}, at most {MAX_RETRIES}: a worker that fails that often will not answer (each retry may wait timeout_s)",
                    objective.plugin,
                    objective.retries
                );
            }
            if objective.retries > 0 && objective.isolation != Isolation::Process {
                bail!(
                    "[[reward.objectives]] `{}`: retries need isolation = \"process\" (an in-process call cannot be restarted)",
                    objective.plugin
                );
            }
        }
        for (key, value) in [
            ("sft.num_train_epochs", self.sft.epochs),
            ("sft.per_device_train_batch_size", self.sft.batch_size),
            ("eval.num_generations_eval", self.eval.samples),
            ("eval.batch_size", self.eval.batch_size),
            ("sft.max_completion_length", self.sft.max_completion_length),
            ("eval.max_completion_length", self.eval.max_completion_length),
        ] {
            if value == 0 {
                bail!("{key} must be at least 1 (it is 0)");
            }
        }
        if !self.sft.learning_rate.is_finite() || self.sft.learning_rate <= 0.0 {
            bail!(
                "sft.learning_rate must be a finite number > 0 (it is {})",
                self.sft.learning_rate
            );
        }
        for (key, value) in [
            ("sft.weight_decay", self.sft.weight_decay),
            ("sft.max_grad_norm", self.sft.max_grad_norm),
        ] {
            if !value.is_finite() || value < 0.0 {
                bail!("{key} must be a finite number ≥ 0 (it is {value})");
            }
        }
        for (key, value, most) in [
            (
                "data.max_prompt_length",
                self.data.max_prompt_length.unwrap_or(0),
                MAX_TOKENS,
            ),
            (
                "sft.max_completion_length",
                self.sft.max_completion_length,
                MAX_TOKENS,
            ),
            (
                "eval.max_completion_length",
                self.eval.max_completion_length,
                MAX_TOKENS,
            ),
            ("sft.per_device_train_batch_size", self.sft.batch_size, MAX_ROWS),
            ("eval.batch_size", self.eval.batch_size, MAX_ROWS),
        ] {
            if value > most {
                bail!("{key} = {value} is beyond what any run can hold (at most {most})");
            }
        }
        if self.eval.samples > 1 && self.eval.temperature <= 0.0 {
            bail!("eval.num_generations_eval > 1 needs eval.temperature > 0 (greedy samples would all be the same)");
        }
        super::eval::check_settings(&self.eval)
    }

    /// The longest prompt in tokens: `algorithm.max_prompt_length` (or where earlier configs
    /// set it, `data.max_prompt_length`), else 512.
    pub fn max_prompt_length(&self) -> usize {
        self.algorithm
            .max_prompt_length
            .or(self.data.max_prompt_length)
            .unwrap_or(DEFAULT_MAX_PROMPT_LENGTH)
    }

    /// The system message: the config's, else the preset's.
    /// `data.system_prompt = ""` asks without one (a template that refuses a system turn,
    /// Gemma's, needs that).
    pub fn system_prompt(&self, registry: &crate::plugins::PluginRegistry) -> anyhow::Result<Option<String>> {
        if let Some(system) = &self.data.system_prompt {
            return Ok(Some(system.clone()).filter(|s| !s.is_empty()));
        }
        match &self.reward.preset {
            Some(name) => Ok(Some(
                registry
                    .preset(name)
                    .context("reward.preset")?
                    .system_prompt
                    .to_string(),
            )),
            None => Ok(None),
        }
    }
}

/// Settings with two names: TRL's, and the one crpo had first (configs still use it).
const SYNONYMS: &[(&str, &str, &str)] = &[
    ("run", "num_completions_to_print", "sample_count"),
    ("algorithm", "per_device_train_batch_size", "mini_batch_size"),
    ("algorithm", "entropy_coef", "entropy_coeff"),
    ("algorithm", "multi_objective_aggregation", "aggregation"),
    ("sft", "num_train_epochs", "epochs"),
    ("sft", "per_device_train_batch_size", "batch_size"),
    ("eval", "num_generations_eval", "samples"),
];

/// A setting given under both its names is refused naming both (serde would call it a
/// "duplicate field" under the name the user may not have written).
fn refuse_synonyms_together(text: &str) -> anyhow::Result<()> {
    // Malformed TOML is left to the typed parse, which says where.
    let Ok(table) = text.parse::<toml::Table>() else {
        return Ok(());
    };
    for (section, name, synonym) in SYNONYMS {
        let Some(keys) = table.get(*section).and_then(toml::Value::as_table) else {
            continue;
        };
        if keys.contains_key(*name) && keys.contains_key(*synonym) {
            bail!(
                "[{section}] sets both `{name}` and `{synonym}`, two names of one setting (TRL's and crpo's earlier one): keep one"
            );
        }
    }
    Ok(())
}

/// A negative number for a setting that counts: which key, and for TRL's `max_steps = -1`
/// ("train for num_train_epochs") that `train` runs a number of steps.
fn negative_count_hint(error: &toml::de::Error, text: &str) -> Option<String> {
    let message = error.message();
    if !(message.starts_with("invalid value: integer `-") && message.contains("expected u")) {
        return None;
    }
    let start = error.span()?.start;
    // The text before the value on its line ends in `key =` (also inside an inline table).
    let before = text[..start].rsplit('\n').next()?.trim_end().strip_suffix('=')?;
    let key = before.rsplit(['{', ',']).next()?.trim().trim_matches('"');
    let trl = if key.rsplit('.').next() == Some("max_steps") {
        " (TRL's -1, to train for num_train_epochs, has no counterpart: `train` runs run.max_steps steps)"
    } else {
        ""
    };
    Some(format!("`{key}` counts something: it cannot be negative{trl}"))
}

/// An unknown key that another section knows: say where it belongs.
fn with_section_hint(error: toml::de::Error) -> anyhow::Error {
    let message = error.to_string();
    let key = message
        .split("unknown field `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string);
    let sections: Vec<String> = key
        .as_deref()
        .map(|key| {
            section_keys()
                .into_iter()
                .filter(|(_, keys)| keys.iter().any(|k| k == key))
                .map(|(section, _)| section)
                .collect()
        })
        .unwrap_or_default();
    let invisible = key.as_deref().and_then(|key| {
        let hidden: Vec<String> = key
            .chars()
            .filter(|&c| c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2060}' | '\u{feff}'))
            .map(|c| format!("U+{:04X}", c as u32))
            .collect();
        (!hidden.is_empty()).then(|| {
            format!(
                "`{}` holds an invisible character ({})",
                key.escape_debug(),
                hidden.join(", ")
            )
        })
    });
    match (key, sections.is_empty(), invisible) {
        (_, _, Some(invisible)) => anyhow::anyhow!("{message}{invisible}: retype the key"),
        (Some(key), false, None) => {
            // TRL's num_train_epochs sizes a GRPO run; here only sft's.
            let epochs = if key == "num_train_epochs" {
                " (sft's passes over its data; `train` runs run.max_steps steps)"
            } else {
                ""
            };
            anyhow::anyhow!("{message}`{key}` is a key of {}{epochs}", sections.join(" and "))
        }
        (Some(key), true, None) => match super::trl_names::hint(&key) {
            Some(hint) => anyhow::anyhow!("{message}`{key}` is {hint}"),
            None => error.into(),
        },
        _ => error.into(),
    }
}

/// Every section's keys (those that default to nothing too), by the section's header:
/// `[algorithm]`, `[model.lora]`, `[[reward.objectives]]`.
fn section_keys() -> Vec<(String, Vec<String>)> {
    const EXAMPLE: &str = "[model]\npath = \"m\"\n[model.lora]\n[data]\npath = \"d\"\n[reward]\npreset = \"p\"\n[[reward.objectives]]\nplugin = \"p\"\n";
    const UNSET_BY_DEFAULT: &[(&str, &str)] = &[
        ("algorithm", "epsilon_high"),
        ("data", "eval_path"),
        ("data", "system_prompt"),
        ("sft", "lr_scheduler_type"),
        ("sft", "output_dir"),
        ("model.lora", "exclude_modules"),
        ("model.lora", "task_type"),
        ("model.lora", "bias"),
        ("model.lora", "layers_to_transform"),
        ("model.lora", "layers_pattern"),
        ("model.lora", "rank_pattern"),
        ("model.lora", "alpha_pattern"),
        ("model.lora", "adapter"),
        ("reward.objectives", "name"),
        ("reward.objectives", "weight"),
        ("reward.objectives", "timeout_s"),
    ];
    let Ok(config) = toml::from_str::<RunConfig>(EXAMPLE) else {
        return Vec::new();
    };
    let Ok(toml::Value::Table(sections)) = toml::Value::try_from(&config) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for (section, value) in &sections {
        let Some(table) = value.as_table() else {
            continue;
        };
        found.push((section.clone(), format!("[{section}]"), table));
        for (key, value) in table {
            match value {
                toml::Value::Table(nested) => {
                    found.push((format!("{section}.{key}"), format!("[{section}.{key}]"), nested))
                }
                toml::Value::Array(items) => {
                    if let Some(nested) = items.first().and_then(toml::Value::as_table) {
                        found.push((format!("{section}.{key}"), format!("[[{section}.{key}]]"), nested));
                    }
                }
                _ => {}
            }
        }
    }
    found
        .into_iter()
        .map(|(path, header, table)| {
            let mut keys: Vec<String> = table.keys().cloned().collect();
            keys.extend(
                UNSET_BY_DEFAULT
                    .iter()
                    .filter(|(s, _)| *s == path)
                    .map(|(_, k)| k.to_string()),
            );
            (header, keys)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_of_a_nested_table_in_its_parent_says_where_it_belongs() {
        let text = MINIMAL.replace("[model]", "[model]\nlora_alpha = 8");
        let err = format!("{:#}", RunConfig::parse(&text).unwrap_err());
        assert!(err.contains("`lora_alpha` is a key of [model.lora]"), "{err}");
        let text = MINIMAL.replace("[reward]", "[reward]\nweight = 2.0");
        let err = format!("{:#}", RunConfig::parse(&text).unwrap_err());
        assert!(
            err.contains("`weight` is a key of [[reward.objectives]]"),
            "{err}"
        );
        let text = MINIMAL.replace("[reward]", "[reward]\ntimeout_s = 2.0");
        let err = format!("{:#}", RunConfig::parse(&text).unwrap_err());
        assert!(
            err.contains("`timeout_s` is a key of [[reward.objectives]]"),
            "{err}"
        );
    }

    #[test]
    fn a_key_with_an_invisible_character_says_so() {
        let text = format!("{MINIMAL}\n[algorithm]\n\"num_generations\u{200b}\" = 4\n");
        let err = format!("{:#}", RunConfig::parse(&text).unwrap_err());
        assert!(err.contains("holds an invisible character (U+200B)"), "{err}");
    }

    #[test]
    fn evaluation_during_training_needs_a_held_out_set() {
        let text =
            format!("{MINIMAL}\n[run]\neval_steps = 5\n").replace("[data]", "[data]\neval_fraction = 0.0");
        let err = format!("{:#}", RunConfig::parse(&text).unwrap_err());
        assert!(
            err.contains("run.eval_steps = 5 evaluates the held-out set, but there is none"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_output_dir_is_refused() {
        for text in [
            format!("{MINIMAL}\n[run]\noutput_dir = \"\"\n"),
            format!("{MINIMAL}\n[sft]\noutput_dir = \"\"\n"),
        ] {
            let err = format!("{:#}", RunConfig::parse(&text).unwrap_err());
            assert!(err.contains("output_dir is empty"), "{err}");
        }
    }

    #[test]
    fn a_blank_objective_name_and_a_decoding_named_twice_are_refused() {
        let text = MINIMAL.replace(
            "[reward]",
            "[[reward.objectives]]\nplugin = \"accuracy\"\nname = \" \"\n[reward]",
        );
        let err = format!("{:#}", RunConfig::parse(&text).unwrap_err());
        assert!(err.contains("`accuracy`: name is blank"), "{err}");
        let text = format!("{MINIMAL}\n[run]\neval_steps = 2\neval_decodings = [\"greedy\", \"greedy\"]\n");
        let err = format!("{:#}", RunConfig::parse(&text).unwrap_err());
        assert!(err.contains("names \"greedy\" twice"), "{err}");
    }

    #[test]
    fn a_setting_under_both_its_names_is_refused_naming_both() {
        assert_eq!(
            include_str!("config.rs").matches(concat!("alias", " = ")).count(),
            SYNONYMS.len(),
            "every serde alias is listed in SYNONYMS"
        );
        for (section, name, synonym) in SYNONYMS {
            let text = format!("{MINIMAL}\n[{section}]\n{name} = 1\n{synonym} = 2\n");
            let err = format!("{:#}", RunConfig::parse(&text).unwrap_err());
            assert!(
                err.contains(&format!("[{section}] sets both `{name}` and `{synonym}`")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_negative_count_names_its_key_and_trl_s_minus_one_steps() {
        let err = RunConfig::parse(&format!("{MINIMAL}\n[run]\nmax_steps = -1\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`max_steps` counts something: it cannot be negative (TRL's -1"),
            "{err}"
        );
        let err = RunConfig::parse(&format!("{MINIMAL}\n[algorithm]\nnum_generations = -4\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("`num_generations` counts something: it cannot be negative"),
            "{err}"
        );
        let err = RunConfig::parse(&format!(
            "sft = {{ per_device_train_batch_size = 2, num_train_epochs = -1 }}\n{MINIMAL}"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.ends_with("`num_train_epochs` counts something: it cannot be negative"),
            "{err}"
        );
    }

    #[test]
    fn a_key_in_the_wrong_section_says_where_it_belongs() {
        let text = format!("{MINIMAL}\n[run]\nnum_generations = 4\n");
        let err = format!("{:#}", RunConfig::parse(&text).unwrap_err());
        assert!(err.contains("`num_generations` is a key of [algorithm]"), "{err}");
        let text = format!("{MINIMAL}\n[sft]\nmax_steps = 4\n");
        let err = format!("{:#}", RunConfig::parse(&text).unwrap_err());
        assert!(err.contains("`max_steps` is a key of [run]"), "{err}");
        let text = format!("{MINIMAL}\n[run]\nnum_train_epochs = 3\n");
        let err = format!("{:#}", RunConfig::parse(&text).unwrap_err());
        assert!(err.contains("`train` runs run.max_steps steps"), "{err}");
    }

    #[test]
    fn an_empty_system_prompt_asks_without_one() {
        let registry = crate::plugins::PluginRegistry::builtin_only();
        let preset = RunConfig::parse(MINIMAL).unwrap();
        assert!(preset.system_prompt(&registry).unwrap().is_some(), "the preset's");
        let none = RunConfig::parse(&MINIMAL.replace("[data]\n", "[data]\nsystem_prompt = \"\"\n")).unwrap();
        assert_eq!(none.system_prompt(&registry).unwrap(), None);
    }

    #[test]
    fn a_top_k_of_one_is_refused_as_a_temperature_of_zero_is() {
        let text = format!("{MINIMAL}\n[algorithm]\ntop_k = 1\n");
        let err = format!("{:#}", RunConfig::parse(&text).unwrap_err());
        assert!(err.contains("algorithm.top_k = 1"), "{err}");
        assert!(RunConfig::parse(&format!("{MINIMAL}\n[algorithm]\ntop_k = 2\n")).is_ok());
    }

    #[test]
    fn trl_s_names_say_what_to_write_and_its_scale_rewards_booleans_are_read() {
        let text = format!("{MINIMAL}\n[algorithm]\nreward_weights = [1.0, 2.0]\n");
        let err = format!("{:#}", RunConfig::parse(&text).unwrap_err());
        assert!(
            err.contains("each [[reward.objectives]] entry has its own `weight`"),
            "{err}"
        );
        for (written, read) in [
            ("true", ScaleRewards::Group),
            ("false", ScaleRewards::None),
            ("\"batch\"", ScaleRewards::Batch),
        ] {
            let text = format!("{MINIMAL}\n[algorithm]\nscale_rewards = {written}\n");
            assert_eq!(RunConfig::parse(&text).unwrap().algorithm.scale_rewards, read);
        }
        let text = format!("{MINIMAL}\n[algorithm]\nscale_rewards = \"std\"\n");
        let err = format!("{:#}", RunConfig::parse(&text).unwrap_err());
        assert!(err.contains("unknown scale_rewards `std`"), "{err}");
    }

    #[test]
    fn a_prompt_template_must_place_the_question_and_name_only_known_placeholders() {
        assert!(check_prompt_template(&default_prompt_template()).is_ok());
        assert!(check_prompt_template("Q: {question}").is_ok());
        assert!(check_prompt_template("{question}\nAnswer in \\boxed{X}.").is_ok());
        for (template, says) in [
            ("{question", "has no {question}"),
            ("", "has no {question}"),
            ("{question} {unknown}", "`{unknown}` is not a placeholder"),
        ] {
            let error = check_prompt_template(template).unwrap_err().to_string();
            assert!(error.contains(says), "{template}: {error}");
        }
    }

    #[test]
    fn sampled_evaluation_during_training_needs_a_temperature() {
        let text = format!("{MINIMAL}\n[run]\neval_steps = 5\neval_decodings = [\"greedy\", \"sampled\"]\n");
        let err = RunConfig::parse(&text).unwrap_err().to_string();
        assert!(err.contains("eval.temperature is 0"), "{err}");
        let with_temperature = format!("{text}[eval]\ntemperature = 1.0\n");
        let config = RunConfig::parse(&with_temperature).unwrap();
        let sampled = EvalDecoding::Sampled.settings(&config.eval);
        let greedy = EvalDecoding::Greedy.settings(&config.eval);
        assert_eq!(
            (sampled.temperature, greedy.temperature, greedy.samples),
            (1.0, 0.0, 1)
        );
    }

    #[test]
    fn trl_names_and_the_earlier_ones_both_read() {
        let trl = format!("{MINIMAL}\n[algorithm]\nper_device_train_batch_size = 4\nmulti_objective_aggregation = \"normalize_then_sum\"\nentropy_coef = 0.01\n[sft]\nnum_train_epochs = 3\n[eval]\nnum_generations_eval = 2\ntemperature = 1.0\n");
        let earlier = format!("{MINIMAL}\n[algorithm]\nmini_batch_size = 4\naggregation = \"normalize_then_sum\"\nentropy_coeff = 0.01\n[sft]\nepochs = 3\n[eval]\nsamples = 2\ntemperature = 1.0\n");
        for text in [trl, earlier] {
            let config = RunConfig::parse(&text).unwrap();
            assert_eq!(config.algorithm.mini_batch_size, 4);
            assert_eq!(config.algorithm.aggregation, Aggregation::NormalizeThenSum);
            assert_eq!((config.sft.epochs, config.eval.samples), (3, 2));
        }
        // max_prompt_length sits with the algorithm's knobs, as in TRL; [data] still reads.
        let algorithm = format!("{MINIMAL}\n[algorithm]\nmax_prompt_length = 300\n");
        let data = MINIMAL.replace(
            "path = \"data/train.jsonl\"",
            "path = \"data/train.jsonl\"\nmax_prompt_length = 300",
        );
        for text in [&algorithm, &data] {
            assert_eq!(RunConfig::parse(text).unwrap().max_prompt_length(), 300);
        }
        assert_eq!(RunConfig::parse(MINIMAL).unwrap().max_prompt_length(), 512);
        let both = data.replace("[reward]", "[algorithm]\nmax_prompt_length = 200\n[reward]");
        let err = RunConfig::parse(&both).unwrap_err().to_string();
        assert!(err.contains("disagree"), "{err}");
    }

    const MINIMAL: &str = r#"
        [model]
        path = "models/tiny"
        [data]
        path = "data/train.jsonl"
        [reward]
        preset = "crpo"
    "#;

    #[test]
    fn a_minimal_config_takes_the_documented_defaults() {
        let config = RunConfig::parse(MINIMAL).unwrap();
        assert_eq!(config.model.policy, "qwen2");
        assert_eq!(config.algorithm.loss_type, LossType::Dapo);
        assert_eq!(config.algorithm.epsilon_high(), 0.2);
        assert_eq!(config.reward.preset.as_deref(), Some("crpo"));
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let text = format!("{MINIMAL}\n[algorithm]\nnum_generation = 4\n");
        let err = format!("{:#}", RunConfig::parse(&text).unwrap_err());
        assert!(err.contains("num_generation") && err.contains("line 10"), "{err}");
    }

    #[test]
    fn a_wrong_type_is_named() {
        let text = format!("{MINIMAL}\n[algorithm]\nbeta = \"high\"\n");
        let err = format!("{:#}", RunConfig::parse(&text).unwrap_err());
        assert!(err.contains("beta") && err.contains("invalid type"), "{err}");
    }

    #[test]
    fn values_no_run_can_hold_and_non_finite_factors_are_refused_with_their_key() {
        for (section, entry, key) in [
            (
                "algorithm",
                "overlong_penalty_factor = nan",
                "algorithm.overlong_penalty_factor",
            ),
            (
                "algorithm",
                "overlong_penalty_factor = inf",
                "algorithm.overlong_penalty_factor",
            ),
            (
                "algorithm",
                "min_completion_length = 100\nmax_completion_length = 16",
                "algorithm.min_completion_length",
            ),
            (
                "algorithm",
                "max_completion_length = 18446744073709551615",
                "algorithm.max_completion_length",
            ),
            (
                "algorithm",
                "max_prompt_length = 9223372036854775807",
                "algorithm.max_prompt_length",
            ),
            (
                "algorithm",
                "num_generations = 4611686018427387904",
                "algorithm.num_generations",
            ),
            (
                "algorithm",
                "prompts_per_step = 4611686018427387904",
                "algorithm.prompts_per_step",
            ),
            ("algorithm", "temperature = 1e-40", "algorithm.temperature"),
            ("sft", "weight_decay = nan", "sft.weight_decay"),
            ("sft", "max_grad_norm = -1.0", "sft.max_grad_norm"),
            (
                "sft",
                "max_completion_length = 9223372036854775807",
                "sft.max_completion_length",
            ),
        ] {
            let text = format!("{MINIMAL}\n[{section}]\n{entry}\n");
            let err = format!(
                "{:#}",
                RunConfig::parse(&text)
                    .err()
                    .unwrap_or_else(|| panic!("{entry} accepted"))
            );
            assert!(err.contains(key), "{entry}: {err}");
        }
    }

    #[test]
    fn a_config_saved_as_utf16_is_named_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        let mut utf16 = vec![0xff, 0xfe];
        utf16.extend(MINIMAL.encode_utf16().flat_map(u16::to_le_bytes));
        std::fs::write(&path, utf16).unwrap();
        let err = RunConfig::load(&path).unwrap_err().to_string();
        assert!(
            err.ends_with("run.toml is UTF-16 text: save it as UTF-8"),
            "{err}"
        );
        std::fs::write(&path, b"[run]\nseed = 1\n\xff\n").unwrap();
        let err = RunConfig::load(&path).unwrap_err().to_string();
        assert!(err.ends_with("run.toml:3: not UTF-8 text"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        let text = format!("{MINIMAL}\n[algorithm]\nnum_generations = 1\n");
        let err = RunConfig::parse(&text).unwrap_err().to_string();
        assert!(err.contains("algorithm.num_generations"), "{err}");
        let text = format!("{MINIMAL}\n[algorithm]\nepsilon = 1.5\n");
        let err = RunConfig::parse(&text).unwrap_err().to_string();
        assert!(err.contains("algorithm.epsilon must be at most 1"), "{err}");
        let text = format!("{MINIMAL}\n[algorithm]\ntemperature = inf\n");
        let err = RunConfig::parse(&text).unwrap_err().to_string();
        assert!(err.contains("must be a finite number > 0 (it is inf)"), "{err}");
        let text = format!("{MINIMAL}\n[[reward.objectives]]\nplugin = \"accuracy\"\nweight = -1e39\n");
        let err = RunConfig::parse(&text).unwrap_err().to_string();
        assert!(err.contains("weight -1e39 is not a finite number"), "{err}");
        let text = format!("{MINIMAL}\n[run]\nddp_timeout = 18446744073709551615\n");
        let err = RunConfig::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("run.ddp_timeout is 18446744073709551615, at most 604800"),
            "{err}"
        );
        let no_reward = MINIMAL.replace("preset = \"crpo\"", "");
        assert!(RunConfig::parse(&no_reward)
            .unwrap_err()
            .to_string()
            .contains("[reward]"));
    }

    #[test]
    fn paths_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        let lora = "[model.lora]\nr = 8\nlora_alpha = 16\ntarget_modules = [\"q_proj\"]\nadapter = \"runs/sft/model\"\n";
        std::fs::write(&path, format!("{MINIMAL}\n{lora}")).unwrap();
        let config = RunConfig::load(&path).unwrap();
        assert_eq!(config.model.path, dir.path().join("models/tiny"));
        let adapter = config.model.lora.unwrap().adapter.unwrap();
        assert_eq!(adapter, dir.path().join("runs/sft/model"));
        let err = format!(
            "{:#}",
            RunConfig::load(&dir.path().join("missing.toml")).unwrap_err()
        );
        assert!(err.contains("missing.toml"), "{err}");
    }

    /// `~/crpo-plugins`, as docs/plugin-authoring.md writes it, is the home directory's.
    #[test]
    fn a_path_from_the_home_directory_is_expanded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        let text = format!("[run]\nplugin_dirs = [\"~/crpo-plugins\", \"~not-home\"]\n{MINIMAL}");
        std::fs::write(&path, text).unwrap();
        let config = RunConfig::load(&path).unwrap();
        let home = PathBuf::from(std::env::var_os("HOME").unwrap());
        assert_eq!(
            config.run.plugin_dirs,
            [home.join("crpo-plugins"), dir.path().join("~not-home")]
        );
    }

    #[test]
    fn pins_that_cannot_mean_anything_are_refused_by_key() {
        let pin = |file: &str, sha256: &str| {
            format!("[[run.plugin_pins]]\nfile = \"{file}\"\nsha256 = \"{sha256}\"\n")
        };
        let parse = |pins: String| {
            RunConfig::parse(&format!("{pins}{MINIMAL}"))
                .and_then(|c| c.validate().map(|()| c))
                .map_err(|e| format!("{e:#}"))
        };
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        assert!(parse(pin("liba.so", &a) + &pin("liba.so", &a.to_uppercase())).is_ok());
        let error = parse(pin("liba.so", "xyz")).unwrap_err();
        assert!(
            error.contains("run.plugin_pins[0].sha256 = \"xyz\" is not a sha256"),
            "{error}"
        );
        let error = parse(pin("liba.so", &a) + &pin("liba.so", &b)).unwrap_err();
        assert!(error.contains("pins liba.so twice"), "{error}");
    }

    /// PEFT gives a layer the rank of the first `rank_pattern` key that ends its name, in
    /// the order written: the config's order is kept (a TOML table read sorted gave layer 1's
    /// q_proj rank 8 where the config, and PEFT with the same dict, give 2).
    #[test]
    fn rank_and_alpha_patterns_keep_the_order_written() {
        let config = RunConfig::parse(&format!(
            "{MINIMAL}\n[model.lora]\nr = 4\nlora_alpha = 8\nrank_pattern = {{ q_proj = 2, \"layers.1.self_attn.q_proj\" = 8 }}\nalpha_pattern = {{ v_proj = 1.0, \"layers.0.self_attn.v_proj\" = 3.0 }}\n"
        ))
        .unwrap();
        let lora = config.model.lora.unwrap();
        assert_eq!(
            lora.rank_pattern.keys().collect::<Vec<_>>(),
            ["q_proj", "layers.1.self_attn.q_proj"]
        );
        assert_eq!(
            lora.alpha_pattern.keys().collect::<Vec<_>>(),
            ["v_proj", "layers.0.self_attn.v_proj"]
        );
    }

    #[test]
    fn lora_dropout_is_refused_by_the_command_that_checkpoints() {
        let config = RunConfig::parse(&format!(
            "[model.lora]\nr = 4\nlora_alpha = 8\nlora_dropout = 0.1\n[sft]\ngradient_checkpointing = true\n{MINIMAL}"
        ))
        .unwrap();
        assert!(config
            .check_lora_dropout(
                "algorithm.gradient_checkpointing",
                config.algorithm.gradient_checkpointing
            )
            .is_ok());
        let error = config
            .check_lora_dropout("sft.gradient_checkpointing", config.sft.gradient_checkpointing)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("sft.gradient_checkpointing = true with model.lora.lora_dropout = 0.1"),
            "{error}"
        );
    }
}
