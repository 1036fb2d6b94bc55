//! Model presets (`tiny`, `small`, `qwen2.5-0.5b-shape`): real Hugging Face-format model
//! directories made by the project, so tests, the demo and the benchmarks go through exactly
//! the loading path users use. The tokenizer is a byte-level
//! BPE trained with the tokenizers crate on the clinical-style corpus in `assets/`; the weights
//! are a seeded random init (normal, std 0.02, as transformers initialises Qwen2), the same
//! for the same seed in any process.

use crate::config::DecoderConfig;
use crate::error::{invalid, io, Result};
use crate::qwen2::DecoderModel;
use crate::weights;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::path::Path;
use tch::{nn::VarStore, Device, Tensor};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

pub const CORPUS: &str = include_str!("../assets/clinical_corpus.txt");
/// ChatML, as Qwen models use: the chat template the presets' tokenizer config carries.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
const BPE_VOCAB: usize = 1280;
/// Qwen2's pre-tokenizer pattern (its tokenizer.json, and transformers' `Qwen2Tokenizer`).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Model shapes the project can create (random weights, the trained tokenizer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// 2 layers, 64 wide (~0.1M parameters): tests.
    Tiny,
    /// 4 layers, 256 wide (~3.3M parameters): the CPU demo.
    Small,
    /// Qwen2.5-0.5B's shape (24 layers, 896 wide, 151,936-row embedding; ~494M parameters)
    /// with random weights: benchmarks at a real model's cost.
    Qwen05bShape,
    /// Qwen2.5-3B's shape (36 layers, 2048 wide, 16 query / 2 key-value heads; ~3.1B
    /// parameters) with random weights: memory and speed checks on a GPU.
    Qwen3bShape,
}

impl Preset {
    pub const NAMES: [&'static str; 4] = ["tiny", "small", "qwen2.5-0.5b-shape", "qwen2.5-3b-shape"];

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "tiny" => Some(Preset::Tiny),
            "small" => Some(Preset::Small),
            "qwen2.5-0.5b-shape" => Some(Preset::Qwen05bShape),
            "qwen2.5-3b-shape" => Some(Preset::Qwen3bShape),
            _ => None,
        }
    }

    /// (hidden, intermediate, layers, heads, kv heads, tied embeddings, vocab rows or None).
    fn shape(self) -> (usize, usize, usize, usize, usize, bool, Option<usize>) {
        match self {
            Preset::Tiny => (64, 176, 2, 4, 2, true, None),
            Preset::Small => (256, 704, 4, 8, 4, true, None),
            Preset::Qwen05bShape => (896, 4864, 24, 14, 2, true, Some(151_936)),
            Preset::Qwen3bShape => (2048, 11008, 36, 16, 2, true, Some(151_936)),
        }
    }
}

/// The preset's config; `vocab_size` is the trained tokenizer's, padded, unless the preset
/// fixes it.
fn preset_config(preset: Preset, vocab_size: usize, eos: u32, bos: u32) -> DecoderConfig {
    let (hidden, intermediate, layers, heads, kv_heads, tie, vocab) = preset.shape();
    serde_json::from_value(serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": vocab.unwrap_or(vocab_size),
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": tie,
        "hidden_act": "silu",
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": "float32"
    }))
    .expect("the preset configs are valid")
}

/// Trains the byte-level BPE tokenizer on the shipped corpus.
pub fn train_tokenizer(dir: &Path) -> Result<Tokenizer> {
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, CORPUS).map_err(io(&corpus))?;
    let mut tokenizer = Tokenizer::new(BPE::default());
    // Qwen2's own pipeline, which transformers rebuilds for any `qwen2` model whatever
    // tokenizer.json says: NFC, its split (each digit alone), then bytes. With GPT-2's split
    // instead, transformers encoded "24-year-old" in other ids than crpo trained on.
    tokenizer.with_normalizer(Some(NFC));
    let qwen2_split = Split::new(
        SplitPattern::Regex(QWEN2_SPLIT.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| invalid(&corpus, e))?;
    tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
        PreTokenizerWrapper::Split(qwen2_split),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
    ])));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let trainer = BpeTrainerBuilder::new()
        .vocab_size(BPE_VOCAB)
        .min_frequency(2)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(
            SPECIAL_TOKENS
                .iter()
                .map(|t| AddedToken::from(*t, true))
                .collect(),
        )
        .build();
    let mut trainer = TrainerWrapper::from(trainer);
    let trained = tokenizer
        .train_from_files(&mut trainer, vec![corpus.to_string_lossy().into_owned()])
        .map_err(|e| invalid(&corpus, e));
    std::fs::remove_file(&corpus).map_err(io(&corpus))?;
    trained?;
    Ok(tokenizer)
}

/// Writes the tiny preset to `dir` (see [`write_preset`]).
pub fn write_tiny(dir: &Path, seed: i64) -> Result<()> {
    write_preset(dir, Preset::Tiny, seed)
}

/// Writes a preset to `dir`: config.json, model.safetensors, tokenizer.json,
/// tokenizer_config.json (with the ChatML chat template) and generation_config.json.
pub fn write_preset(dir: &Path, preset: Preset, seed: i64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tokenizer = train_tokenizer(dir)?;
    let id = |token: &str| {
        tokenizer
            .token_to_id(token)
            .expect("special tokens are in the vocabulary")
    };
    let (eos, bos) = (id("<|im_end|>"), id("<|endoftext|>"));
    // Pad the embedding to a multiple of 64, as Qwen2.5 does: ids past the tokenizer are unused.
    let vocab_size = tokenizer.get_vocab_size(true).div_ceil(64) * 64;
    let config = preset_config(preset, vocab_size, eos, bos);
    let tokenizer_path = dir.join("tokenizer.json");
    tokenizer
        .save(&tokenizer_path, true)
        .map_err(|e| invalid(&tokenizer_path, e))?;

    let vs = VarStore::new(Device::Cpu);
    let _model = DecoderModel::new(&vs.root(), &config);
    // Drawn in name order from a stream of the seed's own, not libtorch's process-wide
    // generator (which anything else in the process may draw from meanwhile) and not in
    // `variables()` order (a HashMap's, different in every run).
    let mut variables: Vec<_> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    let mut rng = ChaCha8Rng::seed_from_u64(seed as u64);
    let normal = Normal::new(0.0f32, 0.02).expect("a positive standard deviation");
    tch::no_grad(|| {
        for (name, mut var) in variables {
            if name.ends_with("norm.weight") {
                let _ = var.fill_(1.0);
            } else if name.ends_with(".bias") {
                let _ = var.zero_();
            } else {
                let values: Vec<f32> = (0..var.numel()).map(|_| normal.sample(&mut rng)).collect();
                var.copy_(&Tensor::from_slice(&values).view(var.size().as_slice()));
            }
        }
    });
    weights::save(&vs, dir)?;

    let write_json = |file: &str, value: serde_json::Value| -> Result<()> {
        let path = dir.join(file);
        std::fs::write(&path, serde_json::to_string_pretty(&value).expect("json")).map_err(io(&path))
    };
    write_json("config.json", serde_json::to_value(&config).expect("json"))?;
    write_json(
        "tokenizer_config.json",
        serde_json::json!({
            "tokenizer_class": "Qwen2Tokenizer",
            "model_max_length": 2048,
            "bos_token": null,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "chat_template": CHATML_TEMPLATE,
        }),
    )?;
    write_json(
        "generation_config.json",
        serde_json::json!({"eos_token_id": [eos], "pad_token_id": bos}),
    )
}
