//! `crpo-host merge-lora`: a LoRA adapter directory (PEFT's files, crpo's or PEFT's) folded
//! into its base model, `W + s·B·A` for every adapted layer, written as a plain Hugging Face
//! model directory that transformers (and crpo) load without peft. It works on the files
//! alone, by PEFT's tensor names, so any base model PEFT can adapt merges the same way.

use crate::atomic_file;
use anyhow::{bail, Context};
use crpo_plugins_policy::weights::{save_tensors, weight_files, SINGLE_FILE};
use crpo_policy_sdk::lora;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

#[derive(clap::Args)]
pub struct MergeLoraArgs {
    /// The adapter directory (adapter_config.json, adapter_model.safetensors).
    #[arg(long)]
    pub adapter: PathBuf,
    /// The base model directory (default: the adapter's base_model_name_or_path).
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Where the merged model directory goes.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace --out if it is not empty (a model there is lost).
    #[arg(long)]
    pub overwrite: bool,
}

/// Files of the base model directory the merged one keeps as they are.
const COPIED: [&str; 6] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

pub fn run(args: &MergeLoraArgs) -> anyhow::Result<()> {
    let (config, recorded_base) = lora::read_adapter_config(&args.adapter)?;
    let base = args.base.clone().unwrap_or(recorded_base);
    if !base.join("config.json").exists() {
        bail!(
            "the base model {} is not a model directory here: pass --base with its local directory",
            base.display()
        );
    }
    if args.out.exists() && !args.out.is_dir() {
        bail!(
            "--out {} is a file: the merged model is a directory",
            args.out.display()
        );
    }
    // Not even with --overwrite: the merge reads them.
    atomic_file::refuse_replacing(&args.out, "--out", &args.adapter, "the adapter")?;
    atomic_file::refuse_replacing(&args.out, "--out", &base, "the base model")?;
    if atomic_file::is_occupied(&args.out) && !args.overwrite {
        bail!(
            "{} is not empty: pass --overwrite to replace what is there, or choose another --out",
            args.out.display()
        );
    }
    let adapters: HashMap<String, Tensor> = lora::read_adapter_weights(&args.adapter)?.into_iter().collect();
    let mut weights = Vec::new();
    for file in weight_files(&base)? {
        weights.extend(
            Tensor::read_safetensors(&file).with_context(|| format!("cannot read {}", file.display()))?,
        );
    }
    let merged = merge(weights, &adapters, &config, &args.adapter)?;
    atomic_file::publish_dir(&args.out, |temp| {
        save_tensors(&merged, &temp.join(SINGLE_FILE))?;
        for file in COPIED {
            let source = base.join(file);
            if source.exists() {
                std::fs::copy(&source, temp.join(file))
                    .with_context(|| format!("cannot copy {}", source.display()))?;
            }
        }
        Ok(())
    })
    .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "merged {} ({} adapted layers) into {}: wrote {}",
        args.adapter.display(),
        adapters.len() / 2,
        base.display(),
        args.out.display()
    );
    Ok(())
}

/// `weights` with each adapted layer's `W` replaced by `W + s·B·A` (`s` the layer's scale by
/// `config`; computed in f32, kept in `W`'s dtype); every adapter pair must find its weight.
fn merge(
    weights: Vec<(String, Tensor)>,
    adapters: &HashMap<String, Tensor>,
    config: &lora::LoraConfig,
    adapter_dir: &Path,
) -> anyhow::Result<Vec<(String, Tensor)>> {
    let mut by_name: HashMap<String, Tensor> = weights.into_iter().collect();
    for (name, a) in adapters {
        let Some(module) = name
            .strip_prefix("base_model.model.")
            .and_then(|n| n.strip_suffix(".lora_A.weight"))
        else {
            continue;
        };
        let b = adapters
            .get(&lora::peft_name(module, "lora_B"))
            .with_context(|| format!("{}: `{name}` has no lora_B beside it", adapter_dir.display()))?;
        let key = format!("{module}.weight");
        let weight = by_name.get_mut(&key).with_context(|| {
            format!(
                "{}: adapts `{module}`, but the base model has no `{key}`",
                adapter_dir.display()
            )
        })?;
        let delta = b.to_kind(Kind::Float).matmul(&a.to_kind(Kind::Float)) * config.scale_for(module);
        if delta.size() != weight.size() {
            bail!(
                "{}: `{module}`'s adapter makes {:?}, its weight is {:?}",
                adapter_dir.display(),
                delta.size(),
                weight.size()
            );
        }
        *weight = (weight.to_kind(Kind::Float) + delta).to_kind(weight.kind());
    }
    Ok(by_name.into_iter().collect())
}
