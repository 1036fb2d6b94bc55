//! The model configuration, read straight from a Hugging Face `config.json` (Qwen2 and Llama;
//! transformers 4 and 5 layouts alike).

use crate::rope::RopeScaling;
use serde::{Deserialize, Serialize};
use serde_json::Number;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    /// Required, as transformers requires it: a Llama read as Qwen2 would drop its biases.
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention: fewer key/value heads than query heads (defaults to MHA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// transformers 4 writes `rope_theta` at the top level; transformers 5 under `rope_parameters`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<RopeParameters>,
    /// transformers 4's frequency scaling (transformers 5 puts it in `rope_parameters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeParameters>,
    /// Absent: transformers' class default ([`default_positions`]); kept absent on saving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_position_embeddings: Option<usize>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama's switch for q/k/v/o biases; Qwen2 always has q/k/v biases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// Keys this implementation does not use (`architectures`, `use_cache`, …), kept so that a
    /// saved config.json is the one that was loaded.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Rotary settings (`rope_parameters`, or transformers 4's `rope_scaling`); crate::rope.
/// Numbers are kept as written (`8192`, not `8192.0`), so a saved config.json is the one loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeParameters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<Number>,
    /// transformers 4 wrote `type` in older checkpoints.
    #[serde(default, alias = "type", skip_serializing_if = "Option::is_none")]
    pub rope_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_freq_factor: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_freq_factor: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_max_position_embeddings: Option<Number>,
    /// Other keys (a scaling's own), kept for saving and for [`RopeScaling::of`] to check.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl RopeParameters {
    /// `rope_type`, `default` when absent.
    pub fn kind(&self) -> &str {
        self.rope_type.as_deref().unwrap_or("default")
    }
}

/// `eos_token_id` is a number or a list of numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a token id (a whole number from 0) or a list of them"
)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}
/// The positions transformers' class for `model_type` gives a config.json without
/// `max_position_embeddings` (Qwen2Config's 32,768, LlamaConfig's 2,048).
pub fn default_positions(model_type: &str) -> Option<usize> {
    match model_type {
        "qwen2" => Some(32768),
        "llama" => Some(2048),
        _ => None,
    }
}
fn default_hidden_act() -> String {
    "silu".into()
}

impl DecoderConfig {
    /// The positions the model takes: `max_position_embeddings`, else transformers' default.
    pub fn max_positions(&self) -> usize {
        self.max_position_embeddings
            .or_else(|| default_positions(&self.model_type))
            .unwrap_or(32768)
    }

    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    pub fn rope_theta(&self) -> f64 {
        self.rope_theta
            .as_ref()
            .or_else(|| self.rope_parameters.as_ref().and_then(|p| p.rope_theta.as_ref()))
            .and_then(Number::as_f64)
            .unwrap_or(10_000.0)
    }

    /// The rotary frequencies' scaling: transformers 5's `rope_parameters`, else transformers
    /// 4's `rope_scaling`.
    pub fn rope_scaling(&self) -> Result<RopeScaling, String> {
        match (&self.rope_parameters, &self.rope_scaling) {
            (Some(parameters), _) if parameters.kind() != "default" || self.rope_scaling.is_none() => {
                RopeScaling::of(Some(parameters), "rope_parameters")
            }
            (_, scaling) => RopeScaling::of(scaling.as_ref(), "rope_scaling"),
        }
    }

    /// q/k/v projections carry biases (always in Qwen2, whose transformers class ignores
    /// `attention_bias`; per `attention_bias` in Llama).
    pub fn qkv_bias(&self) -> bool {
        self.model_type == "qwen2" || self.attention_bias.unwrap_or(false)
    }

    /// Qwen2's sliding-window attention, which this decoder does not implement, is refused
    /// only where it would change a result: transformers windows layer i when
    /// `use_sliding_window` is true, `sliding_window` is set (4096 when absent) and
    /// `layer_types[i]` is "sliding_attention" (when absent: i ≥ `max_window_layers`, 28 when
    /// absent), and a window as long as `max_position_embeddings` covers every sequence a
    /// model may be given (longer ones are refused). Llama's transformers class has no window.
    fn no_window_in_effect(&self) -> Result<(), String> {
        let key = |name: &str| self.extra.get(name);
        if self.model_type != "qwen2" || key("use_sliding_window").and_then(|v| v.as_bool()) != Some(true) {
            return Ok(());
        }
        let window = match key("sliding_window") {
            Some(serde_json::Value::Null) => return Ok(()),
            Some(value) => value
                .as_u64()
                .ok_or_else(|| format!("sliding_window must be a whole number or null (it is {value})"))?,
            None => 4096,
        };
        if window >= self.max_positions() as u64 {
            return Ok(());
        }
        let windowed: Vec<usize> = match key("layer_types").and_then(|v| v.as_array()) {
            Some(types) => (0..self.num_hidden_layers)
                .filter(|&i| types.get(i).and_then(|t| t.as_str()) == Some("sliding_attention"))
                .collect(),
            None => {
                let first = key("max_window_layers").and_then(|v| v.as_u64()).unwrap_or(28) as usize;
                (first..self.num_hidden_layers).collect()
            }
        };
        match windowed.first() {
            None => Ok(()),
            Some(first) => Err(format!(
                "use_sliding_window = true windows attention to {window} tokens on {} of {} layers (from layer {first}), fewer than max_position_embeddings = {}: sliding-window attention is not supported (use_sliding_window = false attends to the whole sequence: the same results only for sequences within the window)",
                windowed.len(),
                self.num_hidden_layers,
                self.max_positions()
            )),
        }
    }

    /// Only Llama's `attention_bias` puts a bias on the output projection.
    pub fn o_bias(&self) -> bool {
        self.model_type != "qwen2" && self.attention_bias.unwrap_or(false)
    }

    /// Parameters the model has at the least (its embedding and each layer's projections;
    /// biases, norms and an untied LM head come on top), in wide arithmetic so that absurd
    /// sizes cannot wrap.
    pub fn least_parameters(&self) -> u128 {
        let [vocab, hidden, intermediate, layers] = [
            self.vocab_size,
            self.hidden_size,
            self.intermediate_size,
            self.num_hidden_layers,
        ]
        .map(|n| n as u128);
        let head_dim = self.head_dim() as u128;
        let times = u128::saturating_mul;
        let q = times(self.num_attention_heads as u128, head_dim);
        let kv = times(self.num_kv_heads() as u128, head_dim);
        let per_layer = times(hidden, q)
            .saturating_add(times(hidden, kv))
            .saturating_mul(2)
            .saturating_add(times(times(hidden, intermediate), 3));
        times(vocab, hidden).saturating_add(times(layers, per_layer))
    }

    /// Checks what this implementation supports, naming the offending key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, value) in [
            ("vocab_size", Some(self.vocab_size)),
            ("hidden_size", Some(self.hidden_size)),
            ("intermediate_size", Some(self.intermediate_size)),
            ("num_hidden_layers", Some(self.num_hidden_layers)),
            ("num_attention_heads", Some(self.num_attention_heads)),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
        ] {
            if value == Some(0) {
                return Err(format!("{key} must be at least 1"));
            }
        }
        if !matches!(self.model_type.as_str(), "qwen2" | "llama") {
            return Err(format!(
                "model_type `{}` is not supported (qwen2, llama)",
                self.model_type
            ));
        }
        // transformers' ACT2FN maps "swish" to SiLU too.
        if !matches!(self.hidden_act.as_str(), "silu" | "swish") {
            return Err(format!(
                "hidden_act `{}` is not supported (silu, swish)",
                self.hidden_act
            ));
        }
        self.rope_scaling()?;
        // A switch transformers reads that this decoder does not implement.
        if self.extra.get("mlp_bias").and_then(|v| v.as_bool()) == Some(true) {
            return Err("mlp_bias = true is not supported".into());
        }
        self.no_window_in_effect()?;
        if !self.num_attention_heads.is_multiple_of(self.num_kv_heads()) {
            return Err("num_attention_heads must be a multiple of num_key_value_heads".into());
        }
        if self.head_dim() == 0 {
            return Err(format!(
                "num_attention_heads = {} is more than hidden_size = {}: each head would have no dimensions (give head_dim, or fewer heads)",
                self.num_attention_heads, self.hidden_size
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err("head_dim must be even for rotary embeddings".into());
        }
        let theta = self.rope_theta();
        if !theta.is_finite() || theta <= 0.0 {
            return Err(format!("rope_theta must be a finite number > 0 (it is {theta})"));
        }
        if !self.rms_norm_eps.is_finite() || self.rms_norm_eps <= 0.0 {
            return Err(format!(
                "rms_norm_eps must be a finite number > 0 (it is {})",
                self.rms_norm_eps
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_transformers_4_and_5_rope_layouts() {
        let v4: DecoderConfig = serde_json::from_str(
            r#"{"model_type":"qwen2","vocab_size":151936,"hidden_size":2048,"intermediate_size":11008,
                "num_hidden_layers":36,"num_attention_heads":16,"num_key_value_heads":2,"rope_theta":1000000.0,
                "tie_word_embeddings":true,"eos_token_id":151645,"torch_dtype":"bfloat16"}"#,
        )
        .unwrap();
        assert_eq!((v4.rope_theta(), v4.num_kv_heads(), v4.head_dim()), (1e6, 2, 128));
        assert!(v4.qkv_bias() && !v4.o_bias());
        let v5: DecoderConfig = serde_json::from_str(
            r#"{"model_type":"llama","vocab_size":32000,"hidden_size":64,"intermediate_size":128,
                "num_hidden_layers":2,"num_attention_heads":4,"rope_parameters":{"rope_theta":500000.0,"rope_type":"default"},
                "eos_token_id":[1,2],"dtype":"float32"}"#,
        )
        .unwrap();
        assert_eq!((v5.rope_theta(), v5.num_kv_heads()), (5e5, 4));
        assert_eq!(v5.eos_token_id.as_ref().unwrap().to_vec(), vec![1, 2]);
        assert!(!v5.qkv_bias());
        // transformers' Qwen2 puts biases on q/k/v whatever `attention_bias` says.
        let mut qwen2 = v4.clone();
        qwen2.attention_bias = Some(false);
        assert!(qwen2.qkv_bias() && !qwen2.o_bias());
        let mut llama = v5.clone();
        llama.attention_bias = Some(true);
        assert!(llama.qkv_bias() && llama.o_bias());
    }

    #[test]
    fn unsupported_settings_are_named() {
        let mut config: DecoderConfig = serde_json::from_str(
            r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2}"#,
        )
        .unwrap();
        assert!(config.validate().is_ok());
        config.num_attention_heads = 0;
        assert_eq!(
            config.validate().unwrap_err(),
            "num_attention_heads must be at least 1"
        );
        config.num_attention_heads = 2;
        config.hidden_act = "gelu".into();
        assert!(config.validate().unwrap_err().contains("hidden_act"));
        config.hidden_act = "swish".into();
        assert!(config.validate().is_ok());
        config.hidden_act = "silu".into();
        config.extra.insert("mlp_bias".into(), true.into());
        assert!(config.validate().unwrap_err().contains("mlp_bias"));
        config.extra.insert("mlp_bias".into(), false.into());
        config.rope_scaling = serde_json::from_str(r#"{"rope_type": "dynamic", "factor": 2.0}"#).unwrap();
        assert!(config
            .validate()
            .unwrap_err()
            .contains("rope_scaling.rope_type `dynamic`"));
    }

    #[test]
    fn a_sliding_window_is_refused_only_where_transformers_would_apply_it() {
        let mut config: DecoderConfig = serde_json::from_str(
            r#"{"model_type":"qwen2","vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":4,
                "num_attention_heads":2,"max_position_embeddings":512,"use_sliding_window":true,"sliding_window":128,
                "max_window_layers":2}"#,
        )
        .unwrap();
        let error = config.validate().unwrap_err();
        assert!(
            error.contains("128 tokens on 2 of 4 layers (from layer 2)"),
            "{error}"
        );
        // No layer from max_window_layers on; a window covering every position; no window.
        config.extra.insert("max_window_layers".into(), 4.into());
        assert!(config.validate().is_ok());
        config.extra.remove("max_window_layers");
        assert!(config.validate().is_ok(), "max_window_layers is 28 when absent");
        config.num_hidden_layers = 30;
        assert!(config
            .validate()
            .unwrap_err()
            .contains("2 of 30 layers (from layer 28)"));
        config.extra.insert("sliding_window".into(), 512.into());
        assert!(config.validate().is_ok());
        config
            .extra
            .insert("sliding_window".into(), serde_json::Value::Null);
        assert!(config.validate().is_ok());
        // transformers 5 writes layer_types out; they decide which layers are windowed.
        config.extra.insert("sliding_window".into(), 128.into());
        config.num_hidden_layers = 2;
        config.extra.insert(
            "layer_types".into(),
            serde_json::json!(["full_attention", "full_attention"]),
        );
        assert!(config.validate().is_ok());
        config.extra.insert(
            "layer_types".into(),
            serde_json::json!(["sliding_attention", "full_attention"]),
        );
        assert!(config
            .validate()
            .unwrap_err()
            .contains("1 of 2 layers (from layer 0)"));
        config.extra.insert("use_sliding_window".into(), false.into());
        assert!(config.validate().is_ok());
        config.extra.insert("use_sliding_window".into(), true.into());
        config.model_type = "llama".into();
        assert!(config.validate().is_ok(), "Llama's class has no window");
    }

    #[test]
    fn a_config_without_model_type_is_refused_and_numbers_are_saved_as_written() {
        let error = serde_json::from_str::<DecoderConfig>(
            r#"{"vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2}"#,
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("missing field `model_type`"),
            "{error}"
        );
        let text = r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,"rope_theta":500000,"rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}"#;
        let config: DecoderConfig = serde_json::from_str(text).unwrap();
        assert_eq!(config.rope_theta(), 5e5);
        let saved = serde_json::to_value(&config).unwrap();
        assert_eq!(saved["rope_theta"], serde_json::json!(500000));
        assert_eq!(
            saved["rope_scaling"]["original_max_position_embeddings"],
            serde_json::json!(8192)
        );
        assert_eq!(saved["rope_scaling"]["factor"], serde_json::json!(8.0));
        assert!(matches!(config.rope_scaling(), Ok(RopeScaling::Llama3 { .. })));
    }
}
