//! The `tiny` preset: a real Hugging Face-format model directory made by the project, so tests
//! and the demo go through exactly the loading path users use. The tokenizer is a byte-level
//! BPE trained with the tokenizers crate on the clinical-style corpus in `assets/`; the weights
//! are a seeded random init (normal, std 0.02, as transformers initialises Qwen2).

use crate::config::DecoderConfig;
use crate::error::{invalid, io, Result};
use crate::qwen2::DecoderModel;
use crate::tokenizer::CHATML_TEMPLATE;
use crate::weights;
use std::path::Path;
use tch::{nn::VarStore, Device};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

pub const CORPUS: &str = include_str!("../assets/clinical_corpus.txt");
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
const BPE_VOCAB: usize = 700;

/// Shape of the tiny preset; `vocab_size` is filled in from the trained tokenizer.
fn tiny_config(vocab_size: usize, eos: u32, bos: u32) -> DecoderConfig {
    serde_json::from_value(serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 176,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": true,
        "hidden_act": "silu",
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": "float32"
    }))
    .expect("the tiny config is valid")
}

/// Trains the byte-level BPE tokenizer on the shipped corpus.
pub fn train_tokenizer(dir: &Path) -> Result<Tokenizer> {
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, CORPUS).map_err(io(&corpus))?;
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
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

/// Writes the tiny preset to `dir`: config.json, model.safetensors, tokenizer.json,
/// tokenizer_config.json (with the ChatML chat template) and generation_config.json.
pub fn write_tiny(dir: &Path, seed: i64) -> Result<()> {
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
    let config = tiny_config(vocab_size, eos, bos);
    let tokenizer_path = dir.join("tokenizer.json");
    tokenizer
        .save(&tokenizer_path, true)
        .map_err(|e| invalid(&tokenizer_path, e))?;

    tch::manual_seed(seed);
    let vs = VarStore::new(Device::Cpu);
    let _model = DecoderModel::new(&vs.root(), &config);
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            if name.ends_with("norm.weight") {
                let _ = var.fill_(1.0);
            } else if name.ends_with(".bias") {
                let _ = var.zero_();
            } else {
                let _ = var.normal_(0.0, 0.02);
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
