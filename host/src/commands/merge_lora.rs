//! `crpo-host merge-lora`: a LoRA adapter directory (PEFT's files, crpo's or PEFT's) folded
//! into its base model, `W + s·B·A` for every adapted layer, written as a plain Hugging Face
//! model directory that transformers (and crpo) load without peft. It works on the files
//! alone, by PEFT's tensor names, so any base model PEFT can adapt merges the same way.

use crate::atomic_file;
use anyhow::{bail, Context};
use crpo_plugins_policy::weights::{save_tensors, weight_files, SINGLE_FILE};
use crpo_policy_sdk::lora;
use crpo_policy_sdk::tensor::all_finite;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

#[derive(clap::Args)]
pub struct MergeLoraArgs {
    /// The adapter directory (adapter_config.json, adapter_model.safetensors).
    #[arg(long, value_parser = crate::home_path::path_argument)]
    pub adapter: PathBuf,
    /// The base model directory (default: the adapter's base_model_name_or_path).
    #[arg(long, value_parser = crate::home_path::path_argument)]
    pub base: Option<PathBuf>,
    /// Where the merged model directory goes.
    #[arg(long, value_parser = crate::home_path::path_argument)]
    pub out: PathBuf,
    /// Replace the model directory at --out (the model there is lost; a directory holding
    /// anything else is refused).
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
    if let Some(given) = &args.base {
        crate::rollout::policy::warn_if_another_base(&args.adapter, &recorded_base, given, "--base");
    }
    let base = args.base.clone().unwrap_or(recorded_base);
    if !base.join("config.json").exists() {
        bail!(
            "the base model {} is not a model directory here: pass --base with its local directory",
            base.display()
        );
    }
    crate::model_output::check_model_output(&args.out, "--out", args.overwrite)?;
    // Not even with --overwrite: the merge reads them.
    atomic_file::refuse_replacing(&args.out, "--out", &args.adapter, "the adapter")?;
    atomic_file::refuse_replacing(&args.out, "--out", &base, "the base model")?;
    let adapters: HashMap<String, Tensor> = lora::read_adapter_weights(&args.adapter)?.into_iter().collect();
    let mut weights = Vec::new();
    for file in weight_files(&base)? {
        let tensors = crpo_policy_sdk::tensor::read_safetensors_file(&file).map_err(anyhow::Error::msg)?;
        for (name, tensor) in &tensors {
            if tensor.is_floating_point() && !all_finite(tensor)? {
                bail!(
                    "{}: weight `{name}` holds non-finite values (NaN or ±inf): the base model diverged in training or its file is damaged, and the merged model would hold them too",
                    file.display()
                );
            }
        }
        weights.extend(tensors);
    }
    let merged = merge(weights, &adapters, &config, &args.adapter)?;
    crate::model_output::write_model_dir(&args.out, |temp| {
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
        "wrote {}: the base model {} with the adapter {} ({} adapted layers) merged in (both unchanged)",
        args.out.display(),
        base.display(),
        args.adapter.display(),
        adapters.len() / 2
    );
    Ok(())
}

/// `weights` with each adapted layer's `W` replaced by `W + s·B·A` (`s` the layer's scale by
/// `config`; computed in f32, kept in `W`'s dtype). Every tensor of the adapter must be the
/// `lora_A` or `lora_B` of a layer `config` selects, shaped for its rank and weight, finite.
fn merge(
    weights: Vec<(String, Tensor)>,
    adapters: &HashMap<String, Tensor>,
    config: &lora::LoraConfig,
    adapter_dir: &Path,
) -> anyhow::Result<Vec<(String, Tensor)>> {
    let file = adapter_dir.join(lora::ADAPTER_WEIGHTS);
    let mut by_name: HashMap<String, Tensor> = weights.into_iter().collect();
    let mut modules = std::collections::BTreeSet::new();
    for name in adapters.keys() {
        match lora::module_of(name) {
            Some((module, _)) => modules.insert(module),
            None => bail!(
                "{}: `{name}` is not a LoRA matrix (base_model.model.<layer>.lora_A.weight or lora_B.weight)",
                file.display()
            ),
        };
    }
    if modules.is_empty() {
        bail!(
            "{}: holds no adapter matrices: there is nothing to merge",
            file.display()
        );
    }
    for module in modules {
        if !config.targets(module) {
            bail!(
                "{}: adapts `{module}`, which its adapter_config.json does not select (target_modules {})",
                file.display(),
                serde_json::to_string(&config.target_modules).unwrap_or_default()
            );
        }
        let key = format!("{module}.weight");
        let weight = by_name.get_mut(&key).with_context(|| {
            format!(
                "{}: adapts `{module}`, but the base model has no `{key}`",
                adapter_dir.display()
            )
        })?;
        let (outputs, inputs) = match weight.size()[..] {
            [outputs, inputs] => (outputs, inputs),
            _ => bail!(
                "{}: adapts `{module}`, whose weight is not a matrix",
                adapter_dir.display()
            ),
        };
        let r = config.rank_for(module) as i64;
        let matrix = |which: &str, expected: [i64; 2]| -> anyhow::Result<Tensor> {
            let name = lora::peft_name(module, which);
            let tensor = adapters
                .get(&name)
                .with_context(|| format!("{}: `{module}` has no `{name}`", file.display()))?;
            if tensor.size() != expected {
                bail!(
                    "{}: `{name}` has shape {:?}; rank {r} (adapter_config.json) over `{key}` {:?} needs {expected:?}",
                    file.display(),
                    tensor.size(),
                    [outputs, inputs]
                );
            }
            lora::check_adapter_matrix(&file, &name, tensor)?;
            Ok(tensor.to_kind(Kind::Float))
        };
        let a = matrix("lora_A", [r, inputs])?;
        let b = matrix("lora_B", [outputs, r])?;
        let delta = b.matmul(&a) * config.scale_for(module);
        *weight = (weight.to_kind(Kind::Float) + delta).to_kind(weight.kind());
    }
    Ok(by_name.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    const Q: &str = "model.layers.0.self_attn.q_proj";

    fn merged(adapters: &[(&str, Tensor)]) -> anyhow::Result<Vec<(String, Tensor)>> {
        let config = lora::LoraConfig {
            target_modules: lora::TargetModules::Names(vec!["q_proj".into()]),
            ..lora::LoraConfig::new(2, 4.0)
        };
        let weights = vec![(
            format!("{Q}.weight"),
            Tensor::zeros([6, 4], (Kind::Float, Device::Cpu)),
        )];
        let adapters = adapters
            .iter()
            .map(|(n, t)| (n.to_string(), t.shallow_clone()))
            .collect();
        merge(weights, &adapters, &config, Path::new("adapter"))
    }

    fn ones(shape: [i64; 2]) -> Tensor {
        Tensor::ones(shape, (Kind::Float, Device::Cpu))
    }

    #[test]
    fn an_adapter_that_does_not_fit_its_config_or_weights_is_refused_by_name() {
        let (a, b) = (lora::peft_name(Q, "lora_A"), lora::peft_name(Q, "lora_B"));
        // W + (4 / 2)·B·A, with B·A = 2 everywhere.
        let out = merged(&[(&a, ones([2, 4])), (&b, ones([6, 2]))]).unwrap();
        assert_eq!(out[0].1.mean(Kind::Float).double_value(&[]), 4.0);
        let error = |adapters: &[(&str, Tensor)]| merged(adapters).unwrap_err().to_string();
        // A rank other than adapter_config.json's (it would merge at the wrong scale).
        let e = error(&[(&a, ones([4, 4])), (&b, ones([6, 4]))]);
        assert!(
            e.contains("lora_A.weight` has shape [4, 4]") && e.contains("rank 2"),
            "{e}"
        );
        let e = error(&[(&a, ones([2, 4])), (&b, ones([6, 3]))]);
        assert!(e.contains("lora_B.weight` has shape [6, 3]"), "{e}");
        let e = error(&[(&a, ones([2, 4]) * f64::NAN), (&b, ones([6, 2]))]);
        assert!(e.contains("NaN"), "{e}");
        let e = error(&[(&a, ones([2, 4]).to_kind(Kind::Int)), (&b, ones([6, 2]))]);
        assert!(e.contains("not floating-point"), "{e}");
        assert!(error(&[]).contains("nothing to merge"));
        let k = lora::peft_name("model.layers.0.self_attn.k_proj", "lora_A");
        assert!(error(&[(&k, ones([2, 4]))]).contains("does not select"));
        assert!(error(&[("base_model.model.lm_head.weight", ones([2, 4]))]).contains("not a LoRA matrix"));
    }
}
