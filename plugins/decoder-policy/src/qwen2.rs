//! The Qwen2 decoder (and Llama, which differs only by configuration) in tch.
//!
//! Reference: Qwen2 Technical Report (arXiv 2407.10671) and transformers' `modeling_qwen2.py`:
//! pre-norm blocks with RMSNorm, rotary position embeddings (non-interleaved halves),
//! grouped-query attention, a SwiGLU MLP, and a tied or separate LM head. Variable names match
//! the Hugging Face checkpoint (`model.layers.0.self_attn.q_proj.weight`, …) so safetensors
//! files load directly into the `VarStore`.

use crate::config::DecoderConfig;
use crate::packed::PackedWeight;
use crate::projection::Projection;
use crate::rope::{apply_rotary, RopeScaling, Rotary};
use crpo_policy_sdk::lora::LoraConfig;
use crpo_policy_sdk::PluginError;
use crpo_policy_sdk::{
    full_forward_continuations_with, CacheLayout, CacheStep, GrowingKvCache, KeyValues, Result,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Root-mean-square layer norm, computed in f32 as transformers does.
#[derive(Debug)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(path: nn::Path, size: usize, eps: f64) -> Self {
        RmsNorm {
            weight: path.ones("weight", &[size as i64]),
            eps,
        }
    }

    fn shallow_clone(&self) -> Self {
        RmsNorm {
            weight: self.weight.shallow_clone(),
            eps: self.eps,
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let kind = xs.kind();
        let xs32 = xs.to_kind(Kind::Float);
        let variance = xs32.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let normed = (xs32 * (variance + self.eps).rsqrt()).to_kind(kind);
        normed * &self.weight
    }
}

/// Rows at or below which a projection is computed as `W·xᵀ` (see [`project_weight`]).
pub const FEW_ROWS: i64 = 64;
/// Weights of at least this many elements (1 MiB in f32) are worth that detour; smaller ones
/// take one fused `linear` call, since per-call overhead is what costs at small sizes.
const LARGE_WEIGHT: i64 = 1 << 18;

/// `xs · Wᵀ + b` for a linear layer (see [`project_weight`]).
pub fn project(linear: &nn::Linear, xs: &Tensor) -> Tensor {
    project_weight(&linear.ws, linear.bs.as_ref(), xs)
}

/// `xs · Wᵀ + b` with `W` `[out, in]`. For a few rows (decoding) and a large weight it is
/// computed as `(W · xsᵀ)ᵀ`: MKL then streams the weight once instead of packing a transposed
/// copy of it first, which measured 1.7x faster for Qwen2.5-0.5B's projections and LM head at
/// 16 rows on CPU. Everything else is one `linear` call (bias fused).
pub fn project_weight(weight: &Tensor, bias: Option<&Tensor>, xs: &Tensor) -> Tensor {
    let mut shape = xs.size();
    let inputs = *shape.last().expect("a projection input has a feature dimension");
    let rows = xs.numel() as i64 / inputs.max(1);
    let streamed = rows <= FEW_ROWS && weight.numel() as i64 >= LARGE_WEIGHT && !xs.device().is_cuda();
    if !streamed {
        return xs.linear(weight, bias);
    }
    let flat = xs.reshape([rows, inputs]);
    let projected = weight.matmul(&flat.transpose(0, 1)).transpose(0, 1);
    *shape.last_mut().expect("non-empty shape") = weight.size()[0];
    let out = projected.reshape(shape.as_slice());
    match bias {
        Some(bias) => out + bias,
        None => out,
    }
}

#[derive(Debug)]
struct Attention {
    q_proj: Projection,
    k_proj: Projection,
    v_proj: Projection,
    o_proj: Projection,
    num_heads: i64,
    num_kv_heads: i64,
    head_dim: i64,
}

impl Attention {
    fn new(path: nn::Path, config: &DecoderConfig) -> Self {
        let hidden = config.hidden_size as i64;
        let head_dim = config.head_dim() as i64;
        let heads = config.num_attention_heads as i64;
        let kv_heads = config.num_kv_heads() as i64;
        let qkv = nn::LinearConfig {
            bias: config.qkv_bias(),
            ..Default::default()
        };
        let o = nn::LinearConfig {
            bias: config.o_bias(),
            ..Default::default()
        };
        Attention {
            q_proj: Projection::new(nn::linear(&path / "q_proj", hidden, heads * head_dim, qkv)),
            k_proj: Projection::new(nn::linear(&path / "k_proj", hidden, kv_heads * head_dim, qkv)),
            v_proj: Projection::new(nn::linear(&path / "v_proj", hidden, kv_heads * head_dim, qkv)),
            o_proj: Projection::new(nn::linear(&path / "o_proj", heads * head_dim, hidden, o)),
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim,
        }
    }

    fn shallow_clone(&self) -> Self {
        Attention {
            q_proj: self.q_proj.shallow_clone(),
            k_proj: self.k_proj.shallow_clone(),
            v_proj: self.v_proj.shallow_clone(),
            o_proj: self.o_proj.shallow_clone(),
            ..*self
        }
    }

    fn forward(
        &self,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        cache: &mut dyn KeyValues,
        layer: usize,
    ) -> Tensor {
        let (b, t, _) = xs.size3().unwrap();
        let split = |proj: &Projection, heads: i64| {
            proj.forward(xs)
                .view([b, t, heads, self.head_dim])
                .transpose(1, 2)
        };
        let q = apply_rotary(&split(&self.q_proj, self.num_heads), cos, sin);
        let k = apply_rotary(&split(&self.k_proj, self.num_kv_heads), cos, sin);
        let v = split(&self.v_proj, self.num_kv_heads);
        let (k, v) = cache.store(layer, &k, &v);
        // enable_gqa shares each key/value head among num_heads / num_kv_heads query heads.
        let gqa = self.num_heads != self.num_kv_heads;
        let out = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), 0.0, false, None, gqa);
        self.o_proj.forward(
            &out.transpose(1, 2)
                .reshape([b, t, self.num_heads * self.head_dim]),
        )
    }
}

#[derive(Debug)]
struct Mlp {
    gate_proj: Projection,
    up_proj: Projection,
    down_proj: Projection,
}

impl Mlp {
    fn new(path: nn::Path, config: &DecoderConfig) -> Self {
        let (h, i) = (config.hidden_size as i64, config.intermediate_size as i64);
        let no_bias = nn::LinearConfig {
            bias: false,
            ..Default::default()
        };
        Mlp {
            gate_proj: Projection::new(nn::linear(&path / "gate_proj", h, i, no_bias)),
            up_proj: Projection::new(nn::linear(&path / "up_proj", h, i, no_bias)),
            down_proj: Projection::new(nn::linear(&path / "down_proj", i, h, no_bias)),
        }
    }

    fn shallow_clone(&self) -> Self {
        Mlp {
            gate_proj: self.gate_proj.shallow_clone(),
            up_proj: self.up_proj.shallow_clone(),
            down_proj: self.down_proj.shallow_clone(),
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        self.down_proj
            .forward(&(self.gate_proj.forward(xs).silu() * self.up_proj.forward(xs)))
    }
}

#[derive(Debug)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    /// The layer over the same weights, owned (a checkpointed layer keeps it for its backward).
    fn shallow_clone(&self) -> Self {
        DecoderLayer {
            input_layernorm: self.input_layernorm.shallow_clone(),
            self_attn: self.self_attn.shallow_clone(),
            post_attention_layernorm: self.post_attention_layernorm.shallow_clone(),
            mlp: self.mlp.shallow_clone(),
        }
    }

    /// The residual stream after this layer (`index` in the model) for `xs` `[B, T, H]`.
    fn forward(
        &self,
        xs: &Tensor,
        (cos, sin): (&Tensor, &Tensor),
        mask: &Tensor,
        cache: &mut dyn KeyValues,
        index: usize,
    ) -> Tensor {
        let attended =
            self.self_attn
                .forward(&self.input_layernorm.forward(xs), cos, sin, mask, cache, index);
        // Out of place on purpose: tch's `+=` is an in-place add_, which would overwrite a
        // tensor autograd saved for the backward pass.
        let xs = xs + attended;
        &xs + self.mlp.forward(&self.post_attention_layernorm.forward(&xs))
    }
}

/// The keys and values of a pass without a cache: each layer attends to the positions of
/// this pass alone (a checkpointed layer, recomputed by itself).
struct Uncached;

impl KeyValues for Uncached {
    fn len(&self) -> i64 {
        0
    }

    fn extend(&mut self, _mask: &Tensor) -> Result<CacheStep> {
        Err(PluginError::failed("a checkpointed layer has no cache to extend"))
    }

    fn store(&mut self, _layer: usize, keys: &Tensor, values: &Tensor) -> (Tensor, Tensor) {
        (keys.shallow_clone(), values.shallow_clone())
    }

    fn select_rows(&mut self, _rows: &Tensor) {}
}

#[derive(Debug)]
pub struct DecoderModel {
    config: DecoderConfig,
    embed_tokens: nn::Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Option<nn::Linear>,
    /// The LM head packed for decoding on the CPU (crate::packed).
    head_packed: PackedWeight,
    rotary: Rotary,
    /// Training passes keep each layer's input only and recompute the layer in the backward.
    gradient_checkpointing: AtomicBool,
    /// The switch every LoRA adapter of this model reads (on unless the reference pass runs).
    adapters_enabled: Arc<AtomicBool>,
}

impl DecoderModel {
    /// Creates the variables under `root` (the VarStore's root) with tch's default init.
    pub fn new(root: &nn::Path, config: &DecoderConfig) -> Self {
        let model = root / "model";
        let (v, h) = (config.vocab_size as i64, config.hidden_size as i64);
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let layer = &model / "layers" / i;
                DecoderLayer {
                    input_layernorm: RmsNorm::new(
                        &layer / "input_layernorm",
                        config.hidden_size,
                        config.rms_norm_eps,
                    ),
                    self_attn: Attention::new(&layer / "self_attn", config),
                    post_attention_layernorm: RmsNorm::new(
                        &layer / "post_attention_layernorm",
                        config.hidden_size,
                        config.rms_norm_eps,
                    ),
                    mlp: Mlp::new(&layer / "mlp", config),
                }
            })
            .collect();
        let lm_head = (!config.tie_word_embeddings).then(|| {
            nn::linear(
                root / "lm_head",
                h,
                v,
                nn::LinearConfig {
                    bias: false,
                    ..Default::default()
                },
            )
        });
        DecoderModel {
            config: config.clone(),
            embed_tokens: nn::embedding(&model / "embed_tokens", v, h, Default::default()),
            layers,
            norm: RmsNorm::new(&model / "norm", config.hidden_size, config.rms_norm_eps),
            lm_head,
            head_packed: PackedWeight::default(),
            rotary: Rotary::scaled(
                config.head_dim(),
                config.rope_theta(),
                config.rope_scaling().unwrap_or(RopeScaling::Default),
                root.device(),
            ),
            gradient_checkpointing: AtomicBool::new(false),
            adapters_enabled: Arc::new(AtomicBool::new(true)),
        }
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Gives every linear layer `config` targets a fresh LoRA adapter (in the weights' dtype
    /// and device); returns the adapters' matrices by PEFT name, in layer order.
    pub fn attach_lora(&mut self, config: &LoraConfig) -> Vec<(String, Tensor)> {
        let enabled = self.adapters_enabled.clone();
        let mut named = Vec::new();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let prefix = format!("model.layers.{i}");
            let attention = &mut layer.self_attn;
            for (name, projection) in [
                ("q_proj", &mut attention.q_proj),
                ("k_proj", &mut attention.k_proj),
                ("v_proj", &mut attention.v_proj),
                ("o_proj", &mut attention.o_proj),
            ] {
                named.extend(projection.attach(&format!("{prefix}.self_attn.{name}"), config, &enabled));
            }
            let mlp = &mut layer.mlp;
            for (name, projection) in [
                ("gate_proj", &mut mlp.gate_proj),
                ("up_proj", &mut mlp.up_proj),
                ("down_proj", &mut mlp.down_proj),
            ] {
                named.extend(projection.attach(&format!("{prefix}.mlp.{name}"), config, &enabled));
            }
        }
        named
    }

    /// LoRA adapters on (the policy) or off (its base: the reference).
    pub fn set_adapters_enabled(&self, enabled: bool) {
        self.adapters_enabled.store(enabled, Ordering::Relaxed);
    }

    /// Turns activation checkpointing of training passes on or off.
    pub fn set_gradient_checkpointing(&self, enabled: bool) {
        self.gradient_checkpointing.store(enabled, Ordering::Relaxed);
    }

    /// Whether this pass checkpoints its layers: asked for, and autograd is recording.
    fn checkpointing(&self) -> bool {
        self.gradient_checkpointing.load(Ordering::Relaxed) && crpo_torch_ext::grad_enabled()
    }

    pub fn device(&self) -> Device {
        self.embed_tokens.ws.device()
    }

    /// The key/value cache generation needs: one per layer, `num_key_value_heads` ×
    /// `head_dim` per position.
    pub fn cache_layout(&self) -> CacheLayout {
        CacheLayout {
            layers: self.layers.len(),
            kv_heads: self.config.num_kv_heads(),
            head_dim: self.config.head_dim(),
        }
    }

    /// Logits `[B, T, vocab]` for `input_ids` `[B, T]`. `attention_mask` `[B, T]` marks real
    /// tokens (1) and padding (0); positions count real tokens only, so a left-padded sequence
    /// gets exactly the logits it would get alone.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let hidden = self.full_hidden_states(input_ids, attention_mask)?;
        Ok(self.logits(&hidden))
    }

    /// A generation step: `input_ids` continue the sequences in `cache`, which grows by them;
    /// the logits of the last position only, `[B, V]`. The LM head is the largest matrix of
    /// small models (Qwen2.5-0.5B: 136M of 494M parameters), so prefilling a prompt through it
    /// at every position would waste most of the prefill.
    pub fn forward_cached(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        cache: &mut dyn KeyValues,
    ) -> Result<Tensor> {
        let hidden = self.hidden_states(input_ids, attention_mask, cache)?;
        Ok(self.logits(&hidden.select(1, -1)))
    }

    /// Logits of positions `first..T` only (the LM head skips the positions before).
    pub fn forward_from(&self, input_ids: &Tensor, attention_mask: &Tensor, first: i64) -> Result<Tensor> {
        let hidden = self.full_hidden_states(input_ids, attention_mask)?;
        let width = hidden.size()[1];
        Ok(self.logits(&hidden.narrow(1, first, width - first)))
    }

    /// Logits predicting each continuation token, `[N, C, V]`: prompts `[P, Tp]` (left-padded)
    /// run once; sequence `i` continues prompt `rows[i]` with `continuation_ids[i]`
    /// (right-padded), attending to the prompt's shared keys and values. Column 0 comes from
    /// the prompt's last position, column `j > 0` from continuation position `j - 1`, exactly
    /// as if each `[prompt | continuation]` row were run in full, at a fraction of the work
    /// when G continuations share a prompt; gradients flow back through the one prompt pass.
    pub fn forward_continuations(
        &self,
        prompt_ids: &Tensor,
        prompt_mask: &Tensor,
        rows: &Tensor,
        continuation_ids: &Tensor,
        continuation_mask: &Tensor,
    ) -> Result<Tensor> {
        if self.checkpointing() {
            // Checkpointed layers recompute from their input alone: each row runs in full
            // rather than attending to a shared prompt pass's keys and values.
            return full_forward_continuations_with(
                |ids, mask, first| self.forward_from(ids, mask, first),
                prompt_ids,
                prompt_mask,
                rows,
                continuation_ids,
                continuation_mask,
            );
        }
        let mut cache = GrowingKvCache::default();
        let prompt_hidden = self.hidden_states(prompt_ids, prompt_mask, &mut cache)?;
        let prompt_width = prompt_hidden.size()[1];
        let last_prompt = prompt_hidden.narrow(1, prompt_width - 1, 1).index_select(0, rows);
        cache.select_rows(rows);
        let width = continuation_ids.size()[1];
        if width <= 1 {
            return Ok(self.logits(&last_prompt));
        }
        // The last continuation token predicts nothing: it is not run.
        let continuation_hidden = self.hidden_states(
            &continuation_ids.narrow(1, 0, width - 1),
            &continuation_mask.narrow(1, 0, width - 1),
            &mut cache,
        )?;
        Ok(self.logits(&Tensor::cat(&[&last_prompt, &continuation_hidden], 1)))
    }

    /// Logits for final hidden states `[B, T, H]`.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        match &self.lm_head {
            Some(head) => self.head_packed.project(&head.ws, head.bs.as_ref(), hidden),
            None => self.head_packed.project(&self.embed_tokens.ws, None, hidden),
        }
    }

    /// The final hidden states of a pass without a past (checkpointed when training with
    /// gradient checkpointing).
    fn full_hidden_states(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        if !self.checkpointing() {
            return self.hidden_states(input_ids, attention_mask, &mut GrowingKvCache::default());
        }
        let step = GrowingKvCache::default().extend(attention_mask)?;
        let mut xs = self.embed_tokens.forward(input_ids);
        let (cos, sin) = self.rotary.cos_sin(&step.positions, xs.kind());
        for (index, layer) in self.layers.iter().enumerate() {
            let (layer, cos, sin) = (layer.shallow_clone(), cos.shallow_clone(), sin.shallow_clone());
            let mask = step.attention_mask.shallow_clone();
            let body = move |inputs: Vec<Tensor>| {
                Ok(vec![layer.forward(
                    &inputs[0],
                    (&cos, &sin),
                    &mask,
                    &mut Uncached,
                    index,
                )])
            };
            xs = crpo_torch_ext::checkpoint(&[&xs], body)
                .map_err(|e| PluginError::failed(format!("layer {index}: {e}")))?
                .remove(0);
        }
        Ok(self.norm.forward(&xs))
    }

    /// The final (normed) hidden states `[B, T, H]` of `input_ids` continuing `cache`.
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        cache: &mut dyn KeyValues,
    ) -> Result<Tensor> {
        let step = cache.extend(attention_mask)?;
        let mut xs = self.embed_tokens.forward(input_ids);
        let (cos, sin) = self.rotary.cos_sin(&step.positions, xs.kind());
        for (index, layer) in self.layers.iter().enumerate() {
            xs = layer.forward(&xs, (&cos, &sin), &step.attention_mask, cache, index);
        }
        Ok(self.norm.forward(&xs))
    }
}
