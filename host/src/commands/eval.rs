//! `crpo-host eval`: the share of questions right and each objective's mean, for one or more
//! models on one or more files, asked exactly as the config's run trained (system prompt,
//! preset, template).

use crate::atomic_file::{self, AtomicFile};
use crate::plugins::PluginRegistry;
use crate::rollout::Policy;
use crate::train::config::{EvalSection, RunConfig};
use crate::train::data::{load_splits, read_examples};
use crate::train::eval::{evaluate, table, EvalReport};
use crate::train::reward::RunReward;
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct EvalArgs {
    /// The run config whose model, prompt format, objectives and `[eval]` settings are used.
    #[arg(long, value_parser = crate::home_path::path_argument)]
    pub config: PathBuf,
    /// Model directories to evaluate (repeatable; default: the config's model).
    #[arg(long, value_parser = crate::home_path::path_argument)]
    pub model: Vec<PathBuf>,
    /// Files to evaluate, read with the config's dataset reader (repeatable; default: the
    /// config's eval split).
    #[arg(long, value_parser = crate::home_path::path_argument)]
    pub data: Vec<PathBuf>,
    /// Samples per question, majority-voted (overrides eval.num_generations_eval; needs a temperature > 0).
    #[arg(long)]
    pub samples: Option<usize>,
    /// Sampling temperature (overrides eval.temperature; 0 = greedy).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Evaluate at most this many questions per file (overrides eval.limit; 0 = all).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Write the reports as JSON here.
    #[arg(long, value_parser = crate::home_path::path_argument)]
    pub output: Option<PathBuf>,
    /// Write every question's completions, scores and chosen answer here (JSONL).
    #[arg(long, value_name = "FILE", value_parser = crate::home_path::path_argument)]
    pub output_completions: Option<PathBuf>,
}

pub fn run(dirs: &[PathBuf], args: &EvalArgs) -> anyhow::Result<()> {
    let (mut config, registry) = super::train::load(dirs, &args.config)?;
    let settings = &mut config.eval;
    if let Some(samples) = args.samples {
        settings.samples = samples;
    }
    if let Some(temperature) = args.temperature {
        settings.temperature = temperature;
    }
    if let Some(limit) = args.limit {
        settings.limit = limit;
    }
    crate::train::eval::check_settings(settings)?;
    super::refuse_naming_twice(&args.model, "model directory", "--model")?;
    super::refuse_naming_twice(&args.data, "data file", "--data")?;
    refuse_replacing_inputs(args, &config)?;
    let mut completions = args
        .output_completions
        .as_deref()
        .map(AtomicFile::create)
        .transpose()?;
    let reports = run_eval(
        &registry,
        &config,
        &config.eval,
        &args.model,
        &args.data,
        completions.as_mut(),
    )?;
    println!("{}", table(&reports));
    if let (Some(file), Some(path)) = (completions, &args.output_completions) {
        file.commit()?;
        println!("completions written to {}", path.display());
    }
    if let Some(path) = &args.output {
        atomic_file::write(path, serde_json::to_string_pretty(&reports)?)?;
        println!("reports written to {}", path.display());
    }
    Ok(())
}

/// Refuses an output that would replace what the evaluation reads (the config, a model, a
/// data file) or the other output.
fn refuse_replacing_inputs(args: &EvalArgs, config: &RunConfig) -> anyhow::Result<()> {
    let mut inputs: Vec<(&Path, &str)> = vec![
        (&args.config, "the config"),
        (&config.model.path, "the config's model"),
        (&config.data.path, "the config's data file"),
    ];
    inputs.extend(
        config
            .data
            .eval_path
            .iter()
            .map(|p| (p.as_path(), "the config's eval file")),
    );
    let adapter = config
        .model
        .lora
        .as_ref()
        .and_then(|lora| lora.adapter.as_deref());
    inputs.extend(adapter.map(|p| (p, "the config's LoRA adapter")));
    inputs.extend(args.model.iter().map(|p| (p.as_path(), "a --model directory")));
    inputs.extend(args.data.iter().map(|p| (p.as_path(), "a --data file")));
    // An adapter directory loads its base model too.
    let bases: Vec<std::path::PathBuf> = inputs
        .iter()
        .filter_map(|(input, _)| crpo_policy_sdk::lora::read_adapter_config(input).ok())
        .map(|(_, base)| base)
        .collect();
    inputs.extend(bases.iter().map(|p| (p.as_path(), "an adapter's base model")));
    let outputs = [
        (args.output.as_deref(), "--output"),
        (args.output_completions.as_deref(), "--output-completions"),
    ];
    for (output, flag) in outputs {
        let Some(output) = output else { continue };
        if output.is_dir() {
            anyhow::bail!(
                "{flag} {} is a directory: name the file to write",
                output.display()
            );
        }
        // Checked now, not after the whole evaluation has run.
        let parent = output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.is_dir() {
            anyhow::bail!(
                "{flag} {}: its directory {} does not exist (create it first)",
                output.display(),
                parent.display()
            );
        }
        for (input, name) in &inputs {
            atomic_file::refuse_replacing(output, flag, input, name)?;
        }
    }
    if let Some(reports) = &args.output {
        atomic_file::refuse_replacing_unless(reports, "--output", "eval report", |bytes| {
            serde_json::from_slice::<serde_json::Value>(bytes).is_ok_and(|json| {
                json.as_array().is_some_and(|reports| {
                    reports
                        .iter()
                        .all(|r| r.get("accuracy").is_some() && r.get("questions").is_some())
                })
            })
        })?;
    }
    if let Some(completions) = &args.output_completions {
        atomic_file::refuse_replacing_unless(
            completions,
            "--output-completions",
            "eval completions file",
            |bytes| {
                atomic_file::first_line_json(bytes).is_some_and(|row| {
                    row.get("completions").is_some_and(serde_json::Value::is_array)
                        && row.get("correct").is_some()
                })
            },
        )?;
    }
    if let (Some(reports), Some(completions)) = (&args.output, &args.output_completions) {
        if atomic_file::written_path(reports) == atomic_file::written_path(completions) {
            anyhow::bail!(
                "--output and --output-completions are both {}: give each its own file",
                reports.display()
            );
        }
    }
    Ok(())
}

/// A label for each `--data` file in tables and completion records: its stem (`test` for
/// `medqa/test.jsonl`), or the path as given where two files share a stem.
fn dataset_labels(paths: &[PathBuf]) -> Vec<String> {
    let stem = |path: &PathBuf| {
        path.file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default()
    };
    paths
        .iter()
        .map(|path| {
            let shared = paths.iter().filter(|other| stem(other) == stem(path)).count() > 1;
            if shared {
                path.display().to_string()
            } else {
                stem(path)
            }
        })
        .collect()
}

/// Evaluates each model on each dataset (the config's eval split when `data` is empty) with
/// the config's objectives and prompt format; question records go to `completions`, tagged
/// with the model and dataset.
pub fn run_eval(
    registry: &PluginRegistry,
    config: &RunConfig,
    settings: &EvalSection,
    models: &[PathBuf],
    data: &[PathBuf],
    mut completions: Option<&mut AtomicFile>,
) -> anyhow::Result<Vec<EvalReport>> {
    let reward = RunReward::from_config(registry, config)?;
    let datasets = if data.is_empty() {
        vec![("eval".to_string(), load_splits(registry, config)?.eval)]
    } else {
        data.iter()
            .zip(dataset_labels(data))
            .map(|(path, name)| Ok((name, read_examples(registry, config, path)?)))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    for (name, examples) in &datasets {
        reward.check_answers_fit(examples, &format!("the `{name}` data"))?;
    }
    let models = if models.is_empty() {
        vec![config.model.path.clone()]
    } else {
        models.to_vec()
    };
    let keep_completions = completions.is_some();
    let mut reports = Vec::new();
    for model in &models {
        let policy = Policy::load(registry, &config.model, model)?.for_inference();
        for (name, examples) in &datasets {
            let mut tagged = |mut record: serde_json::Value| match completions.as_mut() {
                Some(file) => {
                    record["model"] = json!(model);
                    record["dataset"] = json!(name);
                    file.write_line(&record)
                }
                None => Ok(()),
            };
            let sink: Option<&mut dyn FnMut(serde_json::Value) -> anyhow::Result<()>> =
                if keep_completions { Some(&mut tagged) } else { None };
            reports.push(evaluate(
                registry, &policy, &reward, config, settings, examples, name, sink,
            )?);
        }
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_sharing_a_stem_are_labelled_by_their_paths() {
        let paths: Vec<PathBuf> = ["medqa/test.jsonl", "medmcqa/test.jsonl", "pubmedqa/dev.json"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(
            dataset_labels(&paths),
            ["medqa/test.jsonl", "medmcqa/test.jsonl", "dev"]
        );
    }
}
