//! What a run will hold in memory, worked out before anything is loaded: the weights, the
//! frozen reference, gradients, AdamW's state (and f32 master weights under bf16), the
//! rollout's key/value cache, and the activations autograd keeps for one micro-batch — set
//! against the device's free memory, so a run that cannot fit is refused at once, naming the
//! setting that would make it fit, rather than running out of memory hours in.
//!
//! Sizes come from the model directory without loading it: the parameter count from the
//! safetensors headers, the shapes from config.json (Hugging Face's names). Activations per
//! token and layer follow what the decoder's backward keeps (the residual stream, norms,
//! q/k/v/o, the MLP's three projections and their product); the vocabulary-sized terms (the
//! logits, the log-softmax and their gradients) cover completion positions only. The
//! backward also holds trained weights' gradients until each weight's last use, and the
//! optimizer step works on temporaries the size of the largest trained tensor.
//! `crpo_step`'s bench measures peak RSS against this plan.

use super::config::{EvalDecoding, RunConfig};
use super::eval::MAX_EVAL_ROWS;
use anyhow::{bail, Context};
use crpo_plugins_policy::packed::PACKED_WEIGHT;
use crpo_policy_sdk::lora::LoraConfig;
use serde_json::Value;
use std::num::Saturating;
use std::path::Path;
use tch::{Device, Kind};

const GIB: f64 = (1u64 << 30) as f64;

/// The decoder's shapes, from config.json.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelShape {
    pub parameters: u64,
    pub hidden: u64,
    /// Query heads × head_dim (q_proj's outputs, o_proj's inputs).
    pub q_width: u64,
    pub intermediate: u64,
    pub layers: u64,
    pub kv_width: u64,
    pub vocab: u64,
    /// Whether `parameters` was counted from the weights' headers (else from config.json's
    /// shape: a directory without weights yet).
    pub counted: bool,
}

impl ModelShape {
    /// Reads `dir`'s config.json and safetensors headers (without weights, the count from the
    /// shape); `None` when config.json lacks a decoder's shape (a policy plugin of another
    /// kind: no plan, not an error).
    pub fn of_dir(dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = dir.join("config.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        let json: Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
        // A size written as anything but a whole number from 1 is the loader's refusal too.
        let field = |key: &str| match json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => match value.as_u64().filter(|&n| n >= 1) {
                Some(n) => Ok(Some(n)),
                None => Err(anyhow::anyhow!(
                    "{}: {key} = {value} is not a whole number from 1",
                    path.display()
                )),
            },
        };
        let (Some(hidden), Some(intermediate), Some(layers), Some(heads), Some(vocab)) = (
            field("hidden_size")?,
            field("intermediate_size")?,
            field("num_hidden_layers")?,
            field("num_attention_heads")?,
            field("vocab_size")?,
        ) else {
            return Ok(None);
        };
        let head_dim = field("head_dim")?.unwrap_or(hidden / heads);
        let kv_heads = field("num_key_value_heads")?.unwrap_or(heads);
        let q_width = heads.saturating_mul(head_dim);
        let kv_width = kv_heads.saturating_mul(head_dim);
        for (key, value, most) in [
            ("hidden_size", hidden, MAX_WIDTH),
            ("intermediate_size", intermediate, MAX_WIDTH),
            ("num_attention_heads × head_dim", q_width, MAX_WIDTH),
            ("num_key_value_heads × head_dim", kv_width, MAX_WIDTH),
            ("num_hidden_layers", layers, MAX_LAYERS),
            ("vocab_size", vocab, MAX_VOCAB),
        ] {
            if value > most {
                bail!(
                    "{}: {key} = {value} is larger than any decoder could be (at most {most})",
                    path.display()
                );
            }
        }
        let mut shape = ModelShape {
            parameters: 0,
            hidden,
            q_width,
            intermediate,
            layers,
            kv_width,
            vocab,
            counted: true,
        };
        match parameter_count(dir)? {
            Some(parameters) => shape.parameters = parameters,
            // No weights yet (config.json alone, checked before a download): the decoder's
            // count from its shape, as transformers builds it.
            None => {
                let bias = json
                    .get("attention_bias")
                    .and_then(Value::as_bool)
                    .unwrap_or(json.get("model_type").and_then(Value::as_str) == Some("qwen2"));
                let tied = json
                    .get("tie_word_embeddings")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                shape.parameters = shape.parameters_from_shape(bias, tied);
                shape.counted = false;
            }
        }
        Ok(Some(shape))
    }

    /// The decoder's parameters from its shape: embedding (and an untied LM head), per layer
    /// the attention's projections (with q/k/v biases), the MLP's three and two norms, and the
    /// final norm.
    fn parameters_from_shape(&self, attention_bias: bool, tied: bool) -> u64 {
        let n = Saturating;
        let (hidden, q, kv, intermediate) = (
            n(self.hidden),
            n(self.q_width),
            n(self.kv_width),
            n(self.intermediate),
        );
        let biases = if attention_bias { q + n(2) * kv } else { n(0) };
        let layer =
            n(2) * hidden * q + n(2) * hidden * kv + n(3) * hidden * intermediate + n(2) * hidden + biases;
        let embedding = n(self.vocab) * hidden;
        let head = if tied { n(0) } else { embedding };
        (embedding + head + n(self.layers) * layer + hidden).0
    }
}

/// Bounds on a config.json's sizes, far above any real decoder's (Llama 3.1 405B: 16,384
/// wide, 126 layers; vocabularies up to ~260k), so that a corrupt or hostile file is refused
/// by name instead of planning nonsense.
const MAX_WIDTH: u64 = 1 << 20;
const MAX_LAYERS: u64 = 1 << 12;
const MAX_VOCAB: u64 = 1 << 24;

/// Elements of every tensor in the directory's safetensors files (the ones the decoder
/// reads: `model.safetensors`, else the shards its index lists), from their headers alone.
pub fn parameter_count(dir: &Path) -> anyhow::Result<Option<u64>> {
    use crpo_plugins_policy::weights::{SHARD_INDEX, SINGLE_FILE};
    if !dir.join(SINGLE_FILE).exists() && !dir.join(SHARD_INDEX).exists() {
        return Ok(None);
    }
    let mut total = 0u64;
    for file in crpo_plugins_policy::weights::weight_files(dir)? {
        total = total.saturating_add(elements_in(&file)?);
    }
    Ok(Some(total))
}

/// Elements of the tensors a safetensors file's header describes.
fn elements_in(file: &Path) -> anyhow::Result<u64> {
    use std::io::Read;
    let mut reader = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut length = [0u8; 8];
    reader.read_exact(&mut length).with_context(|| {
        format!(
            "{}: not a safetensors file (shorter than its header)",
            file.display()
        )
    })?;
    let length = u64::from_le_bytes(length);
    if length > 100 << 20 {
        bail!(
            "{}: not a safetensors file (header of {length} bytes)",
            file.display()
        );
    }
    let mut header = vec![0u8; length as usize];
    reader
        .read_exact(&mut header)
        .with_context(|| format!("{}: its header is cut short", file.display()))?;
    let header: Value = serde_json::from_slice(&header)
        .with_context(|| format!("{}: its header is not valid JSON", file.display()))?;
    let tensors = header
        .as_object()
        .with_context(|| format!("{}: its header is not a JSON object", file.display()))?;
    Ok(tensors
        .iter()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .filter_map(|(_, tensor)| tensor.get("shape").and_then(Value::as_array))
        .map(|shape| {
            shape
                .iter()
                .filter_map(Value::as_u64)
                .fold(1u64, u64::saturating_mul)
        })
        .fold(0u64, u64::saturating_add))
}

/// The settings that size a run's memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Bytes per weight in the model's dtype.
    pub weight_bytes: u64,
    pub reference: bool,
    pub rollout_rows: u64,
    pub group: u64,
    pub micro_batch: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub gradient_checkpointing: bool,
    /// Under LoRA: its settings as loaded (which layers it adapts, at which ranks).
    pub lora: Option<LoraConfig>,
    /// The run is on the CPU (where LoRA in f32 decodes through packed weights).
    pub on_cpu: bool,
    /// Rows of an evaluation batch during training (`run.eval_steps`; 0 without), and their
    /// completion budget.
    pub eval_rows: u64,
    pub eval_completion_tokens: u64,
}

/// The decoder's linear layers in `Settings::lora`'s order.
const PROJECTIONS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

/// The model directory whose weights a run loads and the adapter it starts from, if any:
/// `model.path` itself, or when that is an adapter directory its base and its own settings
/// (as the load takes them; an unreadable adapter is the load's error to name).
pub(crate) fn planned_model(config: &RunConfig) -> (std::path::PathBuf, Option<LoraConfig>) {
    match crpo_policy_sdk::lora::read_adapter_config(&config.model.path) {
        Ok((adapter, base)) => (base, Some(adapter)),
        Err(_) => (config.model.path.clone(), None),
    }
}

/// `model.lora` as loaded: an adapter to start from keeps its own rank and layers, and so
/// does an adapter directory given as `model.path` (an unreadable adapter is the load's error
/// to name).
fn lora_of(config: &RunConfig) -> Option<LoraConfig> {
    if let (_, Some(adapter)) = planned_model(config) {
        return Some(adapter);
    }
    config.model.lora.as_ref().map(|configured| {
        crate::rollout::policy::lora_as_loaded(configured)
            .map_or_else(|_| configured.clone(), |(loaded, _)| loaded)
    })
}

impl ModelShape {
    /// Inputs and outputs of each projection, in `PROJECTIONS`' order.
    fn projection_sides(&self) -> [(u64, u64); 7] {
        let (h, q, kv, i) = (self.hidden, self.q_width, self.kv_width, self.intermediate);
        [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]
    }

    /// Each adapter `lora` gives a decoder layer: its rank, inputs and outputs.
    fn adapters<'a>(&'a self, lora: &'a LoraConfig) -> impl Iterator<Item = (u64, u64, u64)> + 'a {
        (0..self.layers).flat_map(move |layer| {
            PROJECTIONS
                .iter()
                .zip(self.projection_sides())
                .filter_map(move |(name, (inputs, outputs))| {
                    let module = format!("model.layers.{layer}.{name}");
                    lora.targets(&module)
                        .then(|| (lora.rank_for(&module) as u64, inputs, outputs))
                })
        })
    }

    /// Parameters of the LoRA adapters `lora` gives the decoder.
    pub fn adapter_parameters(&self, lora: &LoraConfig) -> u64 {
        self.adapters(lora)
            .map(|(r, inputs, outputs)| r.saturating_mul(inputs + outputs))
            .fold(0, u64::saturating_add)
    }

    /// Elements of the weights the rollout packs for decoding: each of at least
    /// `PACKED_WEIGHT` elements (the MLP's and the LM head of a 0.5B model and up).
    pub fn packed_for_decoding(&self) -> u64 {
        let large = |elements: u64| {
            if elements >= PACKED_WEIGHT as u64 {
                elements
            } else {
                0
            }
        };
        let per_layer: u64 = self.projection_sides().iter().map(|(i, o)| large(i * o)).sum();
        per_layer * self.layers + large(self.vocab * self.hidden)
    }

    /// Elements of the largest trained tensor: the embedding (or LM head) when every weight
    /// trains, else the largest adapter matrix (`[r, in]` or `[out, r]`).
    pub fn largest_trained(&self, lora: Option<&LoraConfig>) -> u64 {
        match lora {
            None => self
                .projection_sides()
                .iter()
                .map(|(inputs, outputs)| inputs * outputs)
                .fold(self.vocab * self.hidden, u64::max),
            Some(lora) => self
                .adapters(lora)
                .map(|(r, inputs, outputs)| r.saturating_mul(inputs.max(outputs)))
                .max()
                .unwrap_or(0),
        }
    }
}

/// Which command's run: CRPO training, or supervised fine-tuning (no reference, no rollout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Train,
    Sft,
}

impl Settings {
    /// LoRA in f32 on the CPU: the rollout decodes through packed copies of the frozen base's
    /// large weights (crpo_plugins_policy::packed).
    pub fn decodes_through_packed_weights(&self) -> bool {
        self.lora.is_some() && self.weight_bytes == 4 && self.on_cpu && self.rollout_rows > 0
    }

    /// The settings of `config`'s `phase` with weights in `kind`.
    pub fn for_phase(config: &RunConfig, kind: Kind, phase: Phase) -> Self {
        match phase {
            Phase::Train => Self::of(config, kind),
            Phase::Sft => Settings {
                weight_bytes: kind.elt_size_in_bytes() as u64,
                reference: false,
                rollout_rows: 0,
                group: 1,
                micro_batch: config.sft.batch_size as u64,
                prompt_tokens: config.max_prompt_length() as u64,
                completion_tokens: config.sft.max_completion_length as u64,
                gradient_checkpointing: config.sft.gradient_checkpointing,
                lora: lora_of(config),
                on_cpu: on_cpu(config),
                eval_rows: 0,
                eval_completion_tokens: 0,
            },
        }
    }

    pub fn of(config: &RunConfig, kind: Kind) -> Self {
        let algorithm = &config.algorithm;
        let lora = lora_of(config);
        // Evaluation between steps samples batches of whole questions (eval.rs), the sampled
        // decoding with the most rows.
        let samples = if config.run.eval_decodings.contains(&EvalDecoding::Sampled) {
            config.eval.samples.max(1)
        } else {
            1
        };
        let eval_rows = if config.run.eval_steps > 0 {
            (config.eval.batch_size.min(MAX_EVAL_ROWS / samples).max(1) * samples) as u64
        } else {
            0
        };
        // A token budget per pass holds fewer rows than the micro-batch. The cut counts a
        // shared prompt once (micro_batches.rs, `padded_tokens`): at most the rows whose
        // completions fit beside one prompt, and always one.
        let micro_batch = match algorithm.max_tokens_per_micro_batch {
            Some(budget) => algorithm.mini_batch_size.min(
                (budget.saturating_sub(config.max_prompt_length()) / algorithm.max_completion_length.max(1))
                    .max(1),
            ),
            None => algorithm.mini_batch_size,
        };
        Settings {
            weight_bytes: kind.elt_size_in_bytes() as u64,
            reference: algorithm.beta > 0.0,
            rollout_rows: (algorithm
                .prompts_per_step
                .min(algorithm.prompts_per_rollout_batch())
                * algorithm.num_generations) as u64,
            group: algorithm.num_generations as u64,
            micro_batch: micro_batch as u64,
            prompt_tokens: config.max_prompt_length() as u64,
            completion_tokens: algorithm.max_completion_length as u64,
            gradient_checkpointing: algorithm.gradient_checkpointing,
            lora,
            on_cpu: on_cpu(config),
            eval_rows,
            eval_completion_tokens: config.eval.max_completion_length as u64,
        }
    }
}

fn on_cpu(config: &RunConfig) -> bool {
    crate::device::parse_device(&config.model.device).is_ok_and(|d| d == Device::Cpu)
}

/// The plan: bytes by part, the peak, and what is free.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    /// The model's own weights (under LoRA the frozen base).
    pub weights: u64,
    /// The LoRA adapters (0 without LoRA).
    pub adapters: u64,
    pub reference: u64,
    /// f32 copies of weights kept in a lower precision (the optimizer's).
    pub master_weights: u64,
    pub gradients: u64,
    pub optimizer_state: u64,
    pub kv_cache: u64,
    /// The rollout's logits and sampling buffers (`[rows, vocab]` f32, a few of them).
    pub sampling: u64,
    /// An evaluation batch between steps: its KV cache and sampling buffers.
    pub evaluation: u64,
    /// Packed copies of the large weights the rollout decodes with (f32 on the CPU), kept
    /// for the run.
    pub decode_weights: u64,
    pub activations: u64,
    /// Trained weights' gradients the backward holds beside the activations until each
    /// weight's last use has given its share.
    pub gradient_buffers: u64,
    /// AdamW's temporaries while it updates the largest trained tensor.
    pub optimizer_step: u64,
    pub settings: Settings,
}

impl MemoryPlan {
    pub fn new(shape: &ModelShape, settings: Settings) -> Self {
        // Saturating throughout: a config with absurd sizes plans "more than any machine has"
        // (and is refused), never a product that wrapped around to something small.
        let n = Saturating;
        let p = n(shape.parameters);
        let b = n(settings.weight_bytes);
        let (hidden, kv_width, intermediate) = (n(shape.hidden), n(shape.kv_width), n(shape.intermediate));
        let (layers, vocab) = (n(shape.layers), n(shape.vocab));
        let (micro_batch, rows) = (n(settings.micro_batch), n(settings.rollout_rows));
        let weights = p * b;
        let sequence = n(settings.prompt_tokens) + n(settings.completion_tokens);
        // A micro-batch's tokens: each prompt once for its completions (shared passes), one
        // more prompt for a micro-batch that splits a group; checkpointed passes lay every
        // row out in full.
        let prompts = if settings.gradient_checkpointing {
            micro_batch
        } else {
            n((settings.micro_batch.div_ceil(settings.group.max(1)))
                .saturating_add(1)
                .min(settings.micro_batch))
        };
        let prompt_tokens = prompts * n(settings.prompt_tokens);
        let completion_tokens = micro_batch * n(settings.completion_tokens);
        let tokens = prompt_tokens + completion_tokens;
        let per_token_layer = (n(8) * hidden + n(4) * kv_width + n(4) * intermediate) * b;
        let decoder = if settings.gradient_checkpointing {
            // Each layer's input, plus one layer's activations while it is recomputed.
            tokens * layers * hidden * b + tokens * per_token_layer
        } else {
            tokens * layers * per_token_layer
        };
        // Three f32 vocabulary-sized allocations a pass: the logits, their log-softmax (in
        // chunks) and the logits' gradient (rollout/logprobs.rs). Two are live at a time, but
        // the memory one frees is seldom whole when the next is asked for (smaller tensors
        // take pieces of it first), and the CPU heap is never trimmed (crate::memory).
        let vocabulary = completion_tokens * vocab * n(4 * 3);
        // Under LoRA only the adapters train (gradients, AdamW, masters), and the reference is
        // the base with them off: no second copy.
        let trained = n(settings
            .lora
            .as_ref()
            .map_or(shape.parameters, |lora| shape.adapter_parameters(lora)));
        let largest = n(shape.largest_trained(settings.lora.as_ref()));
        // A weight's gradient from one use waits in autograd's buffer for its others'. A
        // shared prompt pass uses every weight twice, its completions' backward coming first:
        // a gradient of every trained weight waits, and the tied embedding's lookup adds one
        // more of the largest. A checkpointed pass uses each layer once: only the embedding's
        // (LM head and lookup) waits, the whole backward.
        let gradient_buffers = if settings.gradient_checkpointing {
            n(2) * largest * b
        } else {
            (trained + largest) * b
        };
        MemoryPlan {
            weights: weights.0,
            adapters: if settings.lora.is_some() {
                (trained * b).0
            } else {
                0
            },
            reference: if settings.reference && settings.lora.is_none() {
                weights.0
            } else {
                0
            },
            master_weights: if b.0 < 4 { (trained * n(4)).0 } else { 0 },
            gradients: (trained * b).0,
            optimizer_state: (n(2) * trained * n(4)).0,
            kv_cache: (layers * n(2) * kv_width * rows * sequence * b).0,
            sampling: (rows * vocab * n(4 * 3)).0,
            evaluation: {
                let (eval_rows, eval_sequence) = (
                    n(settings.eval_rows),
                    n(settings.prompt_tokens) + n(settings.eval_completion_tokens),
                );
                (layers * n(2) * kv_width * eval_rows * eval_sequence * b + eval_rows * vocab * n(4 * 3)).0
            },
            decode_weights: if settings.decodes_through_packed_weights() {
                (n(shape.packed_for_decoding()) * n(4)).0
            } else {
                0
            },
            activations: (decoder + vocabulary).0,
            gradient_buffers: gradient_buffers.0,
            // The update and its denominator in f32, and a working copy (the f32 gradient of
            // bf16 weights, the squared gradient's term) (optimizer.rs).
            optimizer_step: (n(3) * largest * n(4)).0,
            settings,
        }
    }

    /// The most the policy update holds beside what stays: its passes' activations with
    /// their gradient buffers, or the optimizer step's temporaries.
    pub fn update(&self) -> u64 {
        (self.activations.saturating_add(self.gradient_buffers)).max(self.optimizer_step)
    }

    /// The most the rollout holds beside what stays.
    pub fn rollout(&self) -> u64 {
        self.kv_cache.saturating_add(self.sampling)
    }

    /// What stays for the whole run (the decode weights too: crpo_plugins_policy::packed).
    pub fn resident(&self) -> u64 {
        [
            self.adapters,
            self.reference,
            self.master_weights,
            self.gradients,
            self.optimizer_state,
            self.decode_weights,
        ]
        .into_iter()
        .fold(self.weights, u64::saturating_add)
    }

    /// The most held at once: the rollout, the update and an evaluation run one after the
    /// other.
    pub fn peak(&self) -> u64 {
        self.resident()
            .saturating_add(self.rollout().max(self.update()).max(self.evaluation))
    }

    /// The plan as a table, one part per line.
    pub fn table(&self) -> String {
        let s = &self.settings;
        let rows = [
            ("weights", self.weights, String::new()),
            (
                "adapters",
                self.adapters,
                match &s.lora {
                    Some(lora) if lora.rank_pattern.is_empty() => format!("LoRA r = {}", lora.r),
                    Some(lora) => format!("LoRA r = {}, other ranks by rank_pattern", lora.r),
                    None => "none (no LoRA)".into(),
                },
            ),
            (
                "reference",
                self.reference,
                match (s.reference, &s.lora) {
                    (true, None) => "beta > 0".into(),
                    (true, Some(_)) => "the base: LoRA adapters off".into(),
                    (false, _) => "none".into(),
                },
            ),
            ("f32 master weights", self.master_weights, String::new()),
            ("gradients", self.gradients, String::new()),
            ("AdamW moments", self.optimizer_state, "f32".into()),
            (
                "rollout KV cache",
                self.kv_cache,
                format!(
                    "{} rows × {} positions",
                    s.rollout_rows,
                    s.prompt_tokens.saturating_add(s.completion_tokens)
                ),
            ),
            ("rollout sampling", self.sampling, String::new()),
            (
                "evaluation",
                self.evaluation,
                if s.eval_rows > 0 {
                    format!(
                        "KV cache and sampling of {} rows × {} positions (run.eval_steps)",
                        s.eval_rows,
                        s.prompt_tokens.saturating_add(s.eval_completion_tokens)
                    )
                } else {
                    "none during training".into()
                },
            ),
            (
                "decode weights",
                self.decode_weights,
                if self.decode_weights > 0 {
                    "large frozen weights packed for the rollout's decoding, kept".into()
                } else {
                    "none (LoRA in f32 on the CPU packs them)".into()
                },
            ),
            (
                "activations",
                self.activations,
                format!(
                    "per micro-batch of {}{}",
                    s.micro_batch,
                    if s.gradient_checkpointing {
                        ", checkpointed"
                    } else {
                        ""
                    }
                ),
            ),
            (
                "gradient buffers",
                self.gradient_buffers,
                "the backward's, beside the activations".into(),
            ),
            (
                "optimizer step",
                self.optimizer_step,
                "AdamW's temporaries".into(),
            ),
        ];
        let mut out = String::new();
        for (part, bytes, note) in rows {
            out.push_str(&format!("  {part:<20} {:>9.2} GiB  {note}\n", bytes as f64 / GIB));
        }
        out.push_str(&format!("  {:<20} {:>9.2} GiB", "peak", self.peak() as f64 / GIB));
        out
    }
}

/// Memory free for the run on `device`: CUDA's free memory, or the machine's available memory
/// (each rank's share where a launch runs several on this machine).
pub fn free_memory(device: Device) -> Option<(u64, String)> {
    free_memory_among(device, ranks_sharing_this_machine())
}

/// [`free_memory`] where `ranks` processes share the machine (on the CPU).
fn free_memory_among(device: Device, ranks: Option<u64>) -> Option<(u64, String)> {
    match device {
        Device::Cuda(index) => crate::memory_stats::free_and_total(device)
            .map(|(free, _)| (free, format!("free on cuda:{index}"))),
        _ => {
            let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
            let kib = meminfo
                .lines()
                .find_map(|line| line.strip_prefix("MemAvailable:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()?;
            Some(match ranks.filter(|&n| n > 1) {
                Some(ranks) => (
                    kib * 1024 / ranks,
                    format!(
                        "available to each of the {ranks} ranks on this machine (MemAvailable / {ranks})"
                    ),
                ),
                None => (kib * 1024, "available to this machine (MemAvailable)".into()),
            })
        }
    }
}

/// The ranks of a distributed run on this machine, where more than one: torchrun and
/// `--nproc` set LOCAL_WORLD_SIZE (checked with the launch), and they start together and share
/// its memory; a stale LOCAL_WORLD_SIZE outside a launch (no WORLD_SIZE) is no one's.
fn ranks_sharing_this_machine() -> Option<u64> {
    let count = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|n| n.trim().parse::<u64>().ok())
            .filter(|&n| n > 1)
    };
    count("WORLD_SIZE").and(count("LOCAL_WORLD_SIZE"))
}

/// Whether a remedy's peak is worth offering: more than 1% below `peak` (LoRA on a model of
/// a few thousand parameters, or a reference of kilobytes, saves nothing that shows).
fn lowers(peak: u64, remedy: u64) -> bool {
    remedy < peak - peak / 100
}

/// The plan of `config`'s `phase` on its device (None for a model without a decoder's
/// config.json).
pub fn plan_run(
    config: &RunConfig,
    phase: Phase,
) -> anyhow::Result<Option<(MemoryPlan, ModelShape, Device)>> {
    let device = crate::device::parse_device(&config.model.device).context("model.device")?;
    let kind = crate::device::parse_dtype(&config.model.dtype, device).context("model.dtype")?;
    let Some(shape) = ModelShape::of_dir(&planned_model(config).0)? else {
        return Ok(None);
    };
    Ok(Some((
        MemoryPlan::new(&shape, Settings::for_phase(config, kind, phase)),
        shape,
        device,
    )))
}

/// Logs the run's plan and, unless `run.memory_check = false`, refuses one that cannot fit:
/// called before anything is loaded.
pub fn check_run(config: &RunConfig, phase: Phase) -> anyhow::Result<()> {
    let Some((plan, device, free)) = refuse_unfit(config, phase, ranks_sharing_this_machine())? else {
        return Ok(());
    };
    tracing::info!(
        "memory plan on {}{}:\n{}",
        crate::device::device_name(device),
        free.as_ref()
            .map(|(bytes, what)| format!(" ({:.1} GiB {what})", *bytes as f64 / GIB))
            .unwrap_or_default(),
        plan.table()
    );
    Ok(())
}

/// A plan that fits (or was not checked): the plan, its device, and the free memory with
/// where it is, when known.
pub type CheckedPlan = (MemoryPlan, Device, Option<(u64, String)>);

/// The run's plan, its device and free memory, refused (the table in the message) when it
/// does not fit and `run.memory_check` is on; `ranks` processes share this machine. What
/// `train --nproc` checks once before it starts them.
pub fn refuse_unfit(
    config: &RunConfig,
    phase: Phase,
    ranks: Option<u64>,
) -> anyhow::Result<Option<CheckedPlan>> {
    let Some((plan, shape, device)) = plan_run(config, phase)? else {
        return Ok(None);
    };
    let free = free_memory_among(device, ranks);
    if let Some((bytes, what)) = &free {
        if config.run.memory_check {
            check_fits_among(&plan, &shape, *bytes, what, ranks)?;
        }
    }
    Ok(Some((plan, device, free)))
}

/// Refuses a plan whose peak is above `free`, naming the settings that would bring it under,
/// and saying so when no one of them does (or not even all of them together).
pub fn check_fits(plan: &MemoryPlan, shape: &ModelShape, free: u64, where_: &str) -> anyhow::Result<()> {
    check_fits_among(plan, shape, free, where_, ranks_sharing_this_machine())
}

/// [`check_fits`] where `ranks` processes share the machine's memory (`free` is each one's).
fn check_fits_among(
    plan: &MemoryPlan,
    shape: &ModelShape,
    free: u64,
    where_: &str,
    ranks: Option<u64>,
) -> anyhow::Result<()> {
    // Supervised fine-tuning has no rollout: its keys are [sft]'s.
    let section = if plan.settings.rollout_rows == 0 {
        "sft"
    } else {
        "algorithm"
    };
    if plan.peak() <= free {
        return Ok(());
    }
    let gib = |bytes: u64| bytes as f64 / GIB;
    let with = |settings: Settings| MemoryPlan::new(shape, settings);
    // Each remedy with the peak it gives where known; `combined` makes every change at once.
    let mut remedies: Vec<(String, Option<u64>)> = Vec::new();
    let mut combined = plan.settings.clone();
    let trained_state = [
        plan.adapters,
        plan.gradients,
        plan.optimizer_state,
        plan.master_weights,
    ]
    .into_iter()
    .fold(plan.weights, u64::saturating_add);
    // A remedy is offered where it fits alone or lowers the peak (with absurd settings
    // checkpointing need not; LoRA on a tiny model saves nothing that shows), and only what
    // is offered counts in `combined`.
    let worth = |peak: u64| peak <= free || lowers(plan.peak(), peak);
    if !plan.settings.gradient_checkpointing {
        let checkpointed = with(Settings {
            gradient_checkpointing: true,
            ..plan.settings.clone()
        });
        if worth(checkpointed.peak()) {
            combined.gradient_checkpointing = true;
            remedies.push((
                format!(
                    "set {section}.gradient_checkpointing = true (peak {:.1} GiB)",
                    gib(checkpointed.peak())
                ),
                Some(checkpointed.peak()),
            ));
        }
    }
    let mut micro_batch = plan.settings.micro_batch;
    combined.micro_batch = combined.micro_batch.min(1);
    while micro_batch > 1 {
        micro_batch /= 2;
        let smaller = with(Settings {
            micro_batch,
            ..plan.settings.clone()
        });
        if smaller.peak() <= free || micro_batch == 1 {
            remedies.push((
                format!(
                    "lower {section}.per_device_train_batch_size to {micro_batch} (peak {:.1} GiB)",
                    gib(smaller.peak())
                ),
                Some(smaller.peak()),
            ));
            break;
        }
    }
    if plan.settings.weight_bytes == 4 {
        // bf16 weights: half the bytes, and no packed f32 copies for decoding.
        let halved = Settings {
            weight_bytes: 2,
            ..plan.settings.clone()
        };
        let halved = with(halved);
        if worth(halved.peak()) {
            combined.weight_bytes = 2;
            let slow = if plan.settings.on_cpu {
                ", slow on most CPUs"
            } else {
                ""
            };
            remedies.push((
                format!(
                    "set model.dtype = \"bf16\" (peak {:.1} GiB{slow})",
                    gib(halved.peak())
                ),
                Some(halved.peak()),
            ));
        }
    }
    if plan.settings.lora.is_none() {
        let adapted = with(Settings {
            lora: Some(LoraConfig::new(32, 16.0)),
            ..plan.settings.clone()
        });
        if worth(adapted.peak()) {
            combined.lora = Some(LoraConfig::new(32, 16.0));
            remedies.push((
                format!(
                    "train LoRA adapters instead of every weight ([model.lora] r = 32, lora_alpha = 16: peak {:.1} GiB)",
                    gib(adapted.peak())
                ),
                Some(adapted.peak()),
            ));
        }
    }
    if plan.reference > 0 && worth(plan.peak().saturating_sub(plan.reference)) {
        combined.reference = false;
        remedies.push((
            format!(
                "set algorithm.beta = 0, which loads no reference (−{:.1} GiB)",
                gib(plan.reference)
            ),
            Some(plan.peak().saturating_sub(plan.reference)),
        ));
    }
    if plan.rollout() > plan.update() && plan.rollout() >= plan.evaluation {
        // Fewer rows a rollout batch (whole groups): the key that bounds the KV cache.
        let group = plan.settings.group.max(1);
        let mut rows = plan.settings.rollout_rows;
        let mut offered = None;
        while rows > group {
            rows = (rows / 2 / group).max(1) * group;
            let smaller = with(Settings {
                rollout_rows: rows,
                ..plan.settings.clone()
            });
            offered = Some((rows, smaller.peak()));
            if smaller.peak() <= free {
                break;
            }
        }
        combined.rollout_rows = combined.rollout_rows.min(group);
        match offered {
            Some((rows, peak)) => remedies.push((
                format!(
                    "lower algorithm.rollout_batch_size to {rows} (the rollout's KV cache; peak {:.1} GiB)",
                    gib(peak)
                ),
                Some(peak),
            )),
            None => remedies.push((
                "lower algorithm.max_completion_length (one group's KV cache is the rollout's)".into(),
                None,
            )),
        }
    }
    if plan.evaluation > plan.update() && plan.evaluation > plan.rollout() {
        remedies.push((
            "lower eval.batch_size or eval.num_generations_eval (an evaluation batch's KV cache during training)"
                .into(),
            None,
        ));
    }
    // Ranks sharing a CPU machine's memory: as many fewer as would each fit this plan.
    let fewer_ranks = ranks
        .filter(|_| plan.settings.on_cpu)
        .map(|ranks| (ranks, free.saturating_mul(ranks) / plan.peak().max(1)))
        .filter(|&(ranks, fitting)| fitting >= 1 && fitting < ranks);
    if let Some((_, fitting)) = fewer_ranks {
        remedies.push((
            format!(
                "run {fitting} rank{} on this machine (--nproc {fitting}, or torchrun's --nproc-per-node {fitting}), which share its memory",
                if fitting == 1 { "" } else { "s" }
            ),
            None,
        ));
    }
    let together = with(combined).peak();
    let mut advice: Vec<String> = remedies.iter().map(|(what, _)| what.clone()).collect();
    // What stays whatever the settings: only another model or device helps (unless fewer
    // ranks do).
    let beyond_the_settings = if fewer_ranks.is_some() {
        None
    } else if together > free {
        Some(format!(
            "with every change below at once this run still needs {:.1} GiB",
            gib(together)
        ))
    } else if trained_state > free {
        Some(format!(
            "its weights, gradients and AdamW state alone take {:.1} GiB",
            gib(trained_state)
        ))
    } else {
        None
    };
    if let Some(why) = beyond_the_settings {
        advice.insert(0, format!("a smaller model or a larger device ({why})"));
    }
    advice.push("set run.memory_check = false to start anyway".into());
    let mut to_fit = advice.join("; or ");
    if together <= free
        && fewer_ranks.is_none()
        && !remedies
            .iter()
            .any(|(_, peak)| peak.is_some_and(|peak| peak <= free))
    {
        to_fit.push_str(&format!(
            "\nNo one of these fits alone: all of them at once bring the peak to {:.1} GiB.",
            gib(together)
        ));
    }
    bail!(
        "this run needs about {:.1} GiB at its peak but {:.1} GiB are {where_}:\n{}\nTo fit: {to_fit}",
        gib(plan.peak()),
        gib(free),
        plan.table(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Qwen2.5-0.5B's shape.
    fn qwen_half_b() -> ModelShape {
        ModelShape {
            parameters: 494_032_768,
            hidden: 896,
            q_width: 896,
            intermediate: 4864,
            layers: 24,
            kv_width: 128,
            vocab: 151_936,
            counted: true,
        }
    }

    /// Qwen2.5-3B's shape (Qwen/Qwen2.5-3B-Instruct's config.json; its safetensors hold
    /// 3,085,938,688 parameters, the LM head tied to the embedding).
    fn qwen_3b() -> ModelShape {
        ModelShape {
            parameters: 3_085_938_688,
            hidden: 2048,
            q_width: 2048,
            intermediate: 11_008,
            layers: 36,
            kv_width: 256,
            vocab: 151_936,
            counted: true,
        }
    }

    /// A directory holding only config.json (checked before a download): planned from its
    /// shape, with the count its weights would have (tied heads, q/k/v biases as Qwen2 has
    /// them).
    #[test]
    fn a_config_without_weights_is_planned_from_its_shape() {
        let dir = tempfile::tempdir().unwrap();
        let write = |config: &str| std::fs::write(dir.path().join("config.json"), config).unwrap();
        write(
            r#"{"model_type": "qwen2", "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": true}"#,
        );
        let shape = ModelShape::of_dir(dir.path()).unwrap().unwrap();
        assert_eq!((shape.parameters, shape.counted), (qwen_3b().parameters, false));
        write(
            r#"{"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": true}"#,
        );
        assert_eq!(
            ModelShape::of_dir(dir.path()).unwrap().unwrap().parameters,
            qwen_half_b().parameters
        );
    }

    /// docs/reproduce-clinical-r1.md's config as a user copies it, and the peaks it quotes: the
    /// guide stays what the plan says.
    #[test]
    fn the_reproduction_guide_quotes_its_configs_plans() {
        let guide = include_str!("../../../docs/reproduce-clinical-r1.md");
        let config = guide
            .split("```toml\n")
            .nth(1)
            .unwrap()
            .split("```")
            .next()
            .unwrap();
        let peak = |config: &str, phase: Phase| {
            let config = RunConfig::parse(config).unwrap();
            let plan = MemoryPlan::new(&qwen_3b(), Settings::for_phase(&config, Kind::BFloat16, phase));
            format!("{:.1}", plan.peak() as f64 / GIB)
        };
        let quoted = |figure: String| assert!(guide.contains(&figure), "the guide does not quote {figure}");
        quoted(format!("peak {} GiB", peak(config, Phase::Train)));
        // What checkpointing saves: the released code's micro-batch of 8 without it.
        let unchecked = config
            .replace("gradient_checkpointing = true", "gradient_checkpointing = false")
            .replace(
                "per_device_train_batch_size = 2",
                "per_device_train_batch_size = 8",
            );
        let plan = |config: &str| {
            let config = RunConfig::parse(config).unwrap();
            MemoryPlan::new(
                &qwen_3b(),
                Settings::for_phase(&config, Kind::BFloat16, Phase::Train),
            )
        };
        let gib = |bytes: u64| format!("{:.1}", bytes as f64 / GIB);
        quoted(format!(
            "one micro-batch of 8 would need {} GiB",
            peak(&unchecked, Phase::Train)
        ));
        // What checkpointing alone saves, at the guide's micro-batch.
        let same_micro_batch =
            config.replace("gradient_checkpointing = true", "gradient_checkpointing = false");
        quoted(format!(
            "activations {} → {} GiB",
            gib(plan(&same_micro_batch).activations),
            gib(plan(config).activations)
        ));
        quoted(format!("gradient buffers: {} GiB", peak(config, Phase::Sft)));
        // The LoRA variants: the table's train / sft peaks.
        let lora = "[model.lora]\nr = 32\nlora_alpha = 16\ntarget_modules = \"all-linear\"\n";
        for (rollout, micro_batch, accumulation) in [(50, 1, 80), (150, 4, 20)] {
            let config = config
                .replace(
                    "rollout_batch_size = 64",
                    &format!("rollout_batch_size = {rollout}"),
                )
                .replace(
                    "per_device_train_batch_size = 2",
                    &format!("per_device_train_batch_size = {micro_batch}"),
                )
                .replace(
                    "gradient_accumulation_steps = 40",
                    &format!("gradient_accumulation_steps = {accumulation}"),
                )
                + lora;
            let row = format!(
                "| {rollout} | {micro_batch} | true (both) | {} / {} GiB |",
                peak(&config, Phase::Train),
                peak(&config, Phase::Sft)
            );
            quoted(row);
        }
    }

    fn settings() -> Settings {
        Settings {
            weight_bytes: 4,
            reference: true,
            rollout_rows: 16,
            group: 4,
            micro_batch: 16,
            prompt_tokens: 151,
            completion_tokens: 64,
            gradient_checkpointing: false,
            lora: None,
            on_cpu: true,
            eval_rows: 0,
            eval_completion_tokens: 0,
        }
    }

    #[test]
    fn lora_trains_and_keeps_state_for_the_adapters_only() {
        // r 32 on every projection of Qwen2.5-0.5B (PEFT prints the same count): per layer
        // 32 × (q 896+896, k and v 896+128 each, o 896+896, gate, up and down 896+4864 each)
        // = 32 × 22,912 = 733,184; × 24 layers = 17,596,416.
        let shape = qwen_half_b();
        let lora = LoraConfig::new(32, 16.0);
        assert_eq!(shape.adapter_parameters(&lora), 17_596_416);
        let plan = MemoryPlan::new(
            &shape,
            Settings {
                lora: Some(lora.clone()),
                ..settings()
            },
        );
        let full = MemoryPlan::new(&shape, settings());
        assert_eq!(plan.reference, 0, "the base with adapters off");
        assert_eq!(plan.weights, full.weights, "the base");
        assert_eq!((plan.adapters, full.adapters), (17_596_416 * 4, 0));
        assert!(plan.table().contains("adapters") && plan.table().contains("LoRA r = 32"));
        assert_eq!(plan.gradients, 17_596_416 * 4);
        assert_eq!(plan.optimizer_state, 17_596_416 * 8);
        // The largest adapter matrix: down_proj's A or gate/up's B, 32 × 4,864.
        assert_eq!(shape.largest_trained(Some(&lora)), 155_648);
        assert_eq!(plan.gradient_buffers, (17_596_416 + 155_648) * 4);
        assert_eq!(plan.optimizer_step, 3 * 155_648 * 4);
        // No reference, and gradients and AdamW state for 3.6% of the parameters.
        assert!(plan.peak() < full.peak() - 3 * full.weights);
    }

    #[test]
    fn parts_by_hand() {
        let plan = MemoryPlan::new(&qwen_half_b(), settings());
        let p = 494_032_768u64;
        assert_eq!(plan.weights, 4 * p);
        assert_eq!((plan.reference, plan.gradients), (4 * p, 4 * p));
        assert_eq!((plan.optimizer_state, plan.master_weights), (8 * p, 0));
        // 24 layers × keys and values × 128 wide × 16 rows × 215 positions × 4 bytes.
        assert_eq!(plan.kv_cache, 24 * 2 * 128 * 16 * 215 * 4);
        // Tokens: 5 prompts × 151 + 16 × 64 = 1,779; per token and layer (8·896 + 4·128 +
        // 4·4864) × 4 bytes = 108,544; vocabulary 1,024 × 151,936 × 12.
        assert_eq!(plan.activations, 1779 * 24 * 108_544 + 1024 * 151_936 * 12);
        // The embedding, 151,936 × 896, is the largest tensor: the shared prompt pass holds a
        // gradient of every weight and one more of it; AdamW three f32 temporaries of it.
        let embedding = 151_936 * 896;
        assert_eq!(plan.gradient_buffers, (p + embedding) * 4);
        assert_eq!(plan.optimizer_step, 3 * embedding * 4);
        assert_eq!(
            plan.peak(),
            plan.resident() + plan.activations + plan.gradient_buffers
        );
    }

    #[test]
    fn decoding_on_the_cpu_holds_packed_copies_of_the_large_weights() {
        // The MLP's three 4,864 × 896 matrices of each of 24 layers and the 151,936 × 896 LM
        // head; q and o (896 × 896) and k and v stay as they are.
        let shape = qwen_half_b();
        assert_eq!(shape.packed_for_decoding(), 3 * 4864 * 896 * 24 + 151_936 * 896);
        let lora_cpu = Settings {
            lora: Some(LoraConfig::new(32, 16.0)),
            ..settings()
        };
        let packing = MemoryPlan::new(&shape, lora_cpu.clone());
        assert_eq!(packing.decode_weights, shape.packed_for_decoding() * 4);
        // Not on a GPU, nor without LoRA (the full weights train in place).
        let on_gpu = MemoryPlan::new(
            &shape,
            Settings {
                on_cpu: false,
                ..lora_cpu
            },
        );
        assert_eq!(packing.resident(), on_gpu.resident() + packing.decode_weights);
        assert_eq!(MemoryPlan::new(&shape, settings()).decode_weights, 0);
    }

    #[test]
    fn a_small_update_peaks_in_the_optimizer_step() {
        // One completion token, checkpointed: the embedding's two gradients and its AdamW
        // temporaries outweigh the activations.
        let plan = MemoryPlan::new(
            &qwen_half_b(),
            Settings {
                rollout_rows: 1,
                group: 1,
                micro_batch: 1,
                prompt_tokens: 1,
                completion_tokens: 1,
                gradient_checkpointing: true,
                ..settings()
            },
        );
        let embedding = 151_936 * 896 * 4;
        assert_eq!(plan.gradient_buffers, 2 * embedding);
        assert_eq!(plan.update(), plan.optimizer_step);
        assert_eq!(plan.peak(), plan.resident() + 3 * embedding);
    }

    #[test]
    fn bf16_weights_add_f32_masters_and_halve_the_rest() {
        let plan = MemoryPlan::new(
            &qwen_half_b(),
            Settings {
                weight_bytes: 2,
                ..settings()
            },
        );
        assert_eq!(plan.master_weights, 4 * 494_032_768);
        assert_eq!(plan.weights, 2 * 494_032_768);
    }

    #[test]
    fn checkpointing_keeps_layer_inputs_only() {
        let full = MemoryPlan::new(&qwen_half_b(), settings());
        let checkpointed = MemoryPlan::new(
            &qwen_half_b(),
            Settings {
                gradient_checkpointing: true,
                ..settings()
            },
        );
        // The vocabulary-sized terms stay; the decoder's share falls.
        assert!(checkpointed.activations * 2 < full.activations);
    }

    #[test]
    fn a_plan_over_the_free_memory_is_refused_with_what_would_fit() {
        let plan = MemoryPlan::new(&qwen_half_b(), settings());
        let error = check_fits(&plan, &qwen_half_b(), 12 << 30, "free on cuda:0")
            .unwrap_err()
            .to_string();
        for needle in [
            "free on cuda:0",
            "algorithm.gradient_checkpointing = true",
            "per_device_train_batch_size",
            "algorithm.beta = 0",
            "run.memory_check = false",
            "activations",
        ] {
            assert!(error.contains(needle), "{needle}: {error}");
        }
        assert!(check_fits(&plan, &qwen_half_b(), plan.peak(), "free").is_ok());
    }

    #[test]
    fn an_adapter_to_start_from_is_planned_with_its_own_rank_and_layers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("adapter_config.json"),
            r#"{"peft_type": "LORA", "r": 64, "lora_alpha": 16, "target_modules": ["q_proj"], "base_model_name_or_path": "m"}"#,
        )
        .unwrap();
        let mut config = RunConfig::parse(
            "[model]\npath = \"m\"\n[model.lora]\nr = 8\nlora_alpha = 16\n[data]\npath = \"d.jsonl\"\n[[reward.objectives]]\nplugin = \"consistency\"\n",
        )
        .unwrap();
        let shape = qwen_half_b();
        let planned = |config: &RunConfig| shape.adapter_parameters(&lora_of(config).unwrap());
        assert_eq!(planned(&config), 17_596_416 / 4, "r 8 on every projection");
        config.model.lora.as_mut().unwrap().adapter = Some(dir.path().to_path_buf());
        // r 64 on q_proj alone: 64 × (896 + 896) × 24 layers.
        assert_eq!(planned(&config), 64 * 1792 * 24);
        // PEFT's narrower selections: layers 0 and 1 only, the first of them at rank 4.
        std::fs::write(
            dir.path().join("adapter_config.json"),
            r#"{"peft_type": "LORA", "r": 64, "lora_alpha": 16, "target_modules": ["q_proj"], "base_model_name_or_path": "m",
                "layers_to_transform": [0, 1], "rank_pattern": {"layers\\.0\\.self_attn\\.q_proj": 4}}"#,
        )
        .unwrap();
        assert_eq!(planned(&config), (64 + 4) * 1792);
        // An adapter directory as model.path: its base's weights, with its own adapters.
        config.model.lora = None;
        config.model.path = dir.path().to_path_buf();
        assert_eq!(planned_model(&config).0, std::path::PathBuf::from("m"));
        assert_eq!(planned(&config), (64 + 4) * 1792);
    }

    #[test]
    fn the_rollout_holds_one_rollout_batch_of_whole_groups() {
        let mut config = RunConfig::parse(
            "[model]\npath = \"m\"\n[data]\npath = \"d.jsonl\"\n[[reward.objectives]]\nplugin = \"consistency\"\n",
        )
        .unwrap();
        config.algorithm.prompts_per_step = 512;
        config.algorithm.num_generations = 5;
        config.algorithm.rollout_batch_size = 64;
        assert_eq!(
            Settings::of(&config, Kind::BFloat16).rollout_rows,
            60,
            "12 groups of 5"
        );
        config.algorithm.rollout_batch_size = 3;
        assert_eq!(
            Settings::of(&config, Kind::BFloat16).rollout_rows,
            5,
            "at least one group"
        );
        config.algorithm.prompts_per_step = 2;
        config.algorithm.rollout_batch_size = 64;
        assert_eq!(
            Settings::of(&config, Kind::BFloat16).rollout_rows,
            10,
            "no more than a step"
        );
    }

    /// Evaluation between steps samples batches of whole questions: a plan without it said a
    /// run fits that ran out of memory at its first evaluation. A token budget per pass holds
    /// fewer rows than the micro-batch.
    #[test]
    fn evaluation_during_training_and_a_token_budget_are_planned() {
        let mut config = RunConfig::parse(
            "[model]\npath = \"m\"\n[data]\npath = \"d.jsonl\"\n[[reward.objectives]]\nplugin = \"consistency\"\n",
        )
        .unwrap();
        assert_eq!(Settings::of(&config, Kind::Float).eval_rows, 0, "no eval_steps");
        config.run.eval_steps = 10;
        config.run.eval_decodings = vec![EvalDecoding::Greedy, EvalDecoding::Sampled];
        config.eval.samples = 8;
        config.eval.batch_size = 64;
        config.eval.max_completion_length = 4096;
        let settings = Settings::of(&config, Kind::BFloat16);
        assert_eq!(settings.eval_rows, 512, "64 questions × 8 samples");
        let plan = MemoryPlan::new(&qwen_3b(), settings);
        assert!(plan.evaluation > plan.rollout() && plan.peak() == plan.resident() + plan.evaluation);
        let error = check_fits(&plan, &qwen_3b(), plan.peak() - 1, "free")
            .unwrap_err()
            .to_string();
        assert!(error.contains("lower eval.batch_size"), "{error}");

        // One prompt and as many completions as fit beside it, as the cut counts them.
        config.algorithm.mini_batch_size = 16;
        config.algorithm.max_tokens_per_micro_batch =
            Some(config.max_prompt_length() + 3 * config.algorithm.max_completion_length);
        assert_eq!(Settings::of(&config, Kind::BFloat16).micro_batch, 3);
        config.algorithm.max_tokens_per_micro_batch = Some(1);
        assert_eq!(
            Settings::of(&config, Kind::BFloat16).micro_batch,
            1,
            "a row over the budget runs alone"
        );
    }

    /// When the rollout's KV cache is the peak, the key that bounds it is named with a value
    /// that fits (fewer prompts a step did not lower it), and the LoRA offer counts the packed
    /// decode weights the run would hold.
    #[test]
    fn remedies_name_the_key_that_bounds_the_peak_with_its_real_effect() {
        let rollout_bound = Settings {
            rollout_rows: 1024,
            completion_tokens: 4096,
            micro_batch: 1,
            gradient_checkpointing: true,
            ..settings()
        };
        let plan = MemoryPlan::new(&qwen_half_b(), rollout_bound.clone());
        assert!(plan.rollout() > plan.update());
        let free = plan.peak() / 3;
        let error = check_fits(&plan, &qwen_half_b(), free, "free")
            .unwrap_err()
            .to_string();
        let offered: u64 = error
            .split("lower algorithm.rollout_batch_size to ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{error}"));
        let smaller = MemoryPlan::new(
            &qwen_half_b(),
            Settings {
                rollout_rows: offered,
                ..rollout_bound
            },
        );
        assert!(
            smaller.peak() <= free && offered.is_multiple_of(4),
            "{offered}: {error}"
        );

        let full = MemoryPlan::new(&qwen_half_b(), settings());
        let error = check_fits(&full, &qwen_half_b(), full.peak() / 2, "free")
            .unwrap_err()
            .to_string();
        let lora_cpu = MemoryPlan::new(
            &qwen_half_b(),
            Settings {
                lora: Some(LoraConfig::new(32, 16.0)),
                ..settings()
            },
        );
        assert!(
            error.contains(&format!("peak {:.1} GiB)", lora_cpu.peak() as f64 / GIB)),
            "the LoRA offer is the plan a LoRA run gets: {error}"
        );
    }

    /// A model of a few thousand parameters whose rollout KV cache is the peak: LoRA and
    /// beta = 0 save nothing that shows and are not offered; ranks sharing the machine are
    /// told how many would fit.
    #[test]
    fn remedies_that_save_nothing_are_not_offered_and_fewer_ranks_are() {
        let tiny = ModelShape {
            parameters: 50_000,
            hidden: 64,
            q_width: 64,
            intermediate: 128,
            layers: 2,
            kv_width: 32,
            vocab: 128,
            counted: true,
        };
        let long = Settings {
            rollout_rows: 16,
            completion_tokens: 1 << 20,
            ..settings()
        };
        let plan = MemoryPlan::new(&tiny, long);
        let error = check_fits_among(&plan, &tiny, plan.peak() / 2, "free", None)
            .unwrap_err()
            .to_string();
        let to_fit = error.split("To fit: ").nth(1).unwrap();
        assert!(to_fit.contains("gradient_checkpointing"), "{error}");
        assert!(
            !to_fit.contains("LoRA") && !to_fit.contains("beta = 0"),
            "{error}"
        );
        // A remedy that saves little but is all that is missing is offered: with free memory
        // just under the peak, dropping the reference's kilobytes fits.
        assert!(plan.reference > 0);
        let error = check_fits_among(&plan, &tiny, plan.peak() - plan.reference, "free", None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("set algorithm.beta = 0"), "{error}");
        assert!(!error.contains("No one of these fits alone"), "{error}");
        // Two ranks sharing the machine, each given half of it: one alone fits.
        let error = check_fits_among(&plan, &tiny, plan.peak() * 3 / 4, "each rank's", Some(2))
            .unwrap_err()
            .to_string();
        assert!(error.contains("run 1 rank on this machine (--nproc 1"), "{error}");
        assert!(!error.contains("a smaller model or a larger device"), "{error}");
    }

    /// A LoRA run of the 3B shape on the CPU in f32 holds its weights and their packed decode
    /// copies whatever its batches: the refusal says no setting of the run fits, before its
    /// remedies, and offers bf16 (no packed copies); where each remedy alone falls short but
    /// all together fit, it says so.
    #[test]
    fn a_refusal_says_when_no_remedy_fits_alone_or_together() {
        let lora_3b = Settings {
            lora: Some(LoraConfig::new(32, 16.0)),
            gradient_checkpointing: true,
            micro_batch: 1,
            ..settings()
        };
        let plan = MemoryPlan::new(&qwen_3b(), lora_3b.clone());
        // Weights and packed copies over the free memory: bf16 (no packed copies) fits.
        let free = plan.weights + plan.decode_weights / 2;
        let error = check_fits(&plan, &qwen_3b(), free, "free")
            .unwrap_err()
            .to_string();
        let in_bf16 = MemoryPlan::new(
            &qwen_3b(),
            Settings {
                weight_bytes: 2,
                ..lora_3b
            },
        );
        assert!(in_bf16.peak() <= free);
        assert!(
            error.contains(&format!(
                "set model.dtype = \"bf16\" (peak {:.1} GiB, slow on most CPUs)",
                in_bf16.peak() as f64 / GIB
            )),
            "{error}"
        );
        // Below even the bf16 weights: no setting of this run fits, said first.
        let error = check_fits(&plan, &qwen_3b(), in_bf16.weights / 2, "free")
            .unwrap_err()
            .to_string();
        let to_fit = error.split("To fit: ").nth(1).unwrap();
        assert!(
            to_fit.starts_with("a smaller model or a larger device (with every change below at once"),
            "{error}"
        );

        let full = MemoryPlan::new(&qwen_half_b(), settings());
        let (checkpointed, lora) = (
            MemoryPlan::new(
                &qwen_half_b(),
                Settings {
                    gradient_checkpointing: true,
                    ..settings()
                },
            ),
            MemoryPlan::new(
                &qwen_half_b(),
                Settings {
                    lora: Some(LoraConfig::new(32, 16.0)),
                    ..settings()
                },
            ),
        );
        let free = checkpointed.peak().min(lora.peak()) - 1;
        let error = check_fits(&full, &qwen_half_b(), free, "free")
            .unwrap_err()
            .to_string();
        let together: f64 = error
            .split("all of them at once bring the peak to ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{error}"));
        assert!(together * GIB <= free as f64, "{error}");
    }

    #[test]
    fn parameters_are_counted_from_the_safetensors_header() {
        let dir = tempfile::tempdir().unwrap();
        crpo_plugins_policy::presets::write_tiny(dir.path(), 0).unwrap();
        let shape = ModelShape::of_dir(dir.path()).unwrap().unwrap();
        let policy = crate::rollout::Policy::load_with(
            &crate::plugins::PluginRegistry::builtin_only(),
            "qwen2",
            dir.path(),
            Device::Cpu,
            Kind::Float,
            &Value::Null,
        )
        .unwrap();
        let loaded: usize = policy.parameters().iter().map(|(_, p)| p.numel()).sum();
        assert_eq!(shape.parameters, loaded as u64);
        std::fs::write(dir.path().join("model.safetensors"), [1u8, 2, 3]).unwrap();
        let error = ModelShape::of_dir(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("model.safetensors: not a safetensors file"),
            "{error}"
        );
    }

    #[test]
    fn absurd_sizes_are_refused_by_key_or_planned_as_too_much_never_wrapped() {
        let dir = tempfile::tempdir().unwrap();
        crpo_plugins_policy::presets::write_tiny(dir.path(), 0).unwrap();
        let config_path = dir.path().join("config.json");
        let original: Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
        for (key, value) in [
            ("hidden_size", 1u64 << 40),
            ("num_hidden_layers", 1_000_000_000),
            ("vocab_size", u64::MAX),
        ] {
            let mut config = original.clone();
            config[key] = value.into();
            std::fs::write(&config_path, config.to_string()).unwrap();
            let error = ModelShape::of_dir(dir.path()).unwrap_err().to_string();
            assert!(error.contains(key) && error.contains("config.json"), "{error}");
        }
        // Sizes no loader takes (it said "no decoder shape", and `doctor` passed the config).
        for (key, value) in [
            ("hidden_size", serde_json::json!(-64)),
            ("hidden_size", serde_json::json!(64.5)),
            ("vocab_size", serde_json::json!(0)),
            ("num_attention_heads", serde_json::json!("8")),
        ] {
            let mut config = original.clone();
            config[key] = value.clone();
            std::fs::write(&config_path, config.to_string()).unwrap();
            let error = ModelShape::of_dir(dir.path()).unwrap_err().to_string();
            assert!(
                error.ends_with(&format!(
                    "config.json: {key} = {value} is not a whole number from 1"
                )),
                "{error}"
            );
        }
        // Sizes within the bounds with settings no machine holds: the plan saturates.
        let settings = Settings {
            micro_batch: u64::MAX / 2,
            completion_tokens: u64::MAX / 3,
            rollout_rows: u64::MAX,
            ..settings()
        };
        let plan = MemoryPlan::new(&qwen_half_b(), settings);
        assert_eq!(plan.peak(), u64::MAX);
        assert!(check_fits(&plan, &qwen_half_b(), 1 << 40, "free").is_err());
    }
}
