//! `crpo-host init-model` and `crpo-host generate`, through the policy plugins of the registry.

use crate::device::{parse_device, parse_dtype};
use crate::plugins::PluginRegistry;
use crate::rollout::sampling::SamplingConfig;
use crate::rollout::tokenizer::Message;
use crate::rollout::Policy;
use anyhow::{bail, Context};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct InitModelArgs {
    /// The policy plugin whose preset to write.
    #[arg(long, default_value = "qwen2")]
    pub policy: String,
    /// The preset to write; qwen2's: tiny (2 layers, 64 wide), small (4 layers, 256 wide),
    /// qwen2.5-0.5b-shape or qwen2.5-3b-shape (those models' shapes); random weights, a BPE
    /// tokenizer trained on a clinical corpus.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Output directory (a Hugging Face model directory).
    #[arg(long, value_parser = crate::home_path::path_argument)]
    pub out: PathBuf,
    /// Seeds the weights: the same seed writes the same files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace the model directory at --out (the model there is lost; a directory holding
    /// anything else is refused).
    #[arg(long)]
    pub overwrite: bool,
}

pub fn init_model(registry: &PluginRegistry, args: &InitModelArgs) -> anyhow::Result<()> {
    let plugin = registry.policy(&args.policy)?.plugin();
    let presets = plugin.presets();
    if presets.is_empty() {
        bail!(
            "policy `{}` writes no presets (its presets() lists none): init-model makes models only for policies that offer them, such as qwen2",
            args.policy
        );
    }
    if !presets.contains(&args.preset) {
        bail!(
            "policy `{}` has no preset `{}`: expected one of {}",
            args.policy,
            args.preset,
            presets.join(", ")
        );
    }
    crate::model_output::check_model_output(&args.out, "--out", args.overwrite)?;
    crate::model_output::write_model_dir(&args.out, |temp| {
        Ok(plugin.write_preset(&args.preset, temp, args.seed)?)
    })
    .with_context(|| {
        format!(
            "cannot write the {} preset to {}",
            args.preset,
            args.out.display()
        )
    })?;
    println!("wrote the {} preset to {}", args.preset, args.out.display());
    Ok(())
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// A model directory the policy plugin reads (for qwen2: a Hugging Face directory).
    #[arg(long, value_parser = crate::home_path::path_argument)]
    pub model: PathBuf,
    /// The policy plugin that loads --model.
    #[arg(long, default_value = "qwen2")]
    pub policy: String,
    /// The text to continue (with --chat, the user's message).
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Optional system message (with --chat).
    #[arg(long)]
    pub system: Option<String>,
    /// Take the most likely token each time (no sampling; so no sampling flags with it).
    #[arg(long, conflicts_with_all = ["temperature", "top_p", "top_k", "seed"])]
    pub greedy: bool,
    /// Most tokens to generate (fewer when the model ends its turn).
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Sample from the smallest set of tokens whose probability reaches this (1 = all).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Sample from the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Seeds the sampling: the same seed gives the same text.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// auto | cpu | cuda | cuda:N
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// auto (bf16 on CUDA, f32 on CPU) | f32 | bf16
    #[arg(long, default_value = "auto")]
    pub dtype: String,
}

pub fn generate(registry: &PluginRegistry, args: &GenerateArgs) -> anyhow::Result<()> {
    if args.system.is_some() && !args.chat {
        bail!("--system needs --chat: a system message is part of the chat template");
    }
    if args.max_new_tokens == 0 {
        bail!("--max-new-tokens must be at least 1 (as transformers' generate: 0 generates nothing)");
    }
    if args.prompt.is_empty() && !args.chat {
        bail!("--prompt is empty: there is nothing to continue (give text, or --chat to wrap it in the chat template)");
    }
    crate::rollout::sampling::check_temperature_and_top_p(
        (args.temperature, "--temperature"),
        (args.top_p, "--top-p"),
    )?;
    let device = parse_device(&args.device)?;
    let kind = parse_dtype(&args.dtype, device)?;
    let policy = Policy::load_with(
        registry,
        &args.policy,
        &args.model,
        device,
        kind,
        &serde_json::Value::Null,
    )?
    .for_inference();
    let prompt = if args.chat {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(Message::new("system", system));
        }
        messages.push(Message::new("user", &args.prompt));
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
        first_stream: 0,
        row_budgets: Vec::new(),
    };
    // A raw prompt is encoded as transformers' `tokenizer(prompt)` (with Llama's BOS); a
    // rendered chat carries its own special tokens.
    let ids = if args.chat {
        policy.tokenizer.encode(&prompt)?
    } else {
        policy.tokenizer.encode_with_special_tokens(&prompt)?
    };
    policy.check_positions(
        ("the prompt's tokens", ids.len()),
        ("--max-new-tokens", args.max_new_tokens),
    )?;
    let (completions, _) = policy.generate(&[ids], &sampling)?;
    println!("{}", policy.decode(&completions[0].ids)?);
    Ok(())
}
