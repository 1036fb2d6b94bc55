//! `crpo-host init-model` and `crpo-host generate`.

use crate::device::{parse_device, parse_dtype};
use anyhow::Context;
use crpo_plugins_policy::generation::SamplingConfig;
use crpo_plugins_policy::policy::Policy;
use crpo_plugins_policy::tokenizer::Message;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct InitModelArgs {
    /// The preset to write: tiny (2 layers, 64 wide), small (4 layers, 256 wide) or
    /// qwen2.5-0.5b-shape (Qwen2.5-0.5B's shape); random weights, a BPE tokenizer trained on a
    /// clinical corpus.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Output directory (a Hugging Face model directory).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
}

pub fn init_model(args: &InitModelArgs) -> anyhow::Result<()> {
    use crpo_plugins_policy::tiny::{write_preset, Preset};
    let preset = Preset::from_name(&args.preset).ok_or_else(|| {
        anyhow::anyhow!(
            "preset `{}`: expected one of {}",
            args.preset,
            Preset::NAMES.join(", ")
        )
    })?;
    write_preset(&args.out, preset, args.seed)?;
    println!("wrote the {} preset to {}", args.preset, args.out.display());
    Ok(())
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// A Hugging Face model directory (config.json, safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Optional system message (with --chat).
    #[arg(long)]
    pub system: Option<String>,
    #[arg(long)]
    pub greedy: bool,
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// auto | cpu | cuda | cuda:N
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// auto (bf16 on CUDA, f32 on CPU) | f32 | bf16
    #[arg(long, default_value = "auto")]
    pub dtype: String,
}

pub fn generate(args: &GenerateArgs) -> anyhow::Result<()> {
    let device = parse_device(&args.device)?;
    let kind = parse_dtype(&args.dtype, device)?;
    let policy = Policy::load(&args.model, device, kind)
        .with_context(|| format!("cannot load the model in {}", args.model.display()))?;
    let prompt = if args.chat {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(Message {
                role: "system".into(),
                content: system.clone(),
            });
        }
        messages.push(Message {
            role: "user".into(),
            content: args.prompt.clone(),
        });
        policy.tokenizer.render_chat(&messages, true)?
    } else {
        args.prompt.clone()
    };
    let sampling = SamplingConfig {
        max_new_tokens: args.max_new_tokens,
        min_new_tokens: 0,
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        greedy: args.greedy,
        seed: args.seed,
    };
    let (text, _) = policy.generate_texts(&[prompt], &sampling)?.remove(0);
    println!("{text}");
    Ok(())
}
