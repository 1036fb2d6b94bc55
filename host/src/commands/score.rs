//! `crpo-host score`: scores completions that already exist, so plugin authors can debug an
//! objective on real outputs. Each input line is a dataset record (any format the built-in
//! readers know, or crpo's own example JSON under `example`) plus a `completion` string.

use crate::plugins::{ConfiguredObjective, ObjectiveSpec, PluginRegistry};
use anyhow::{bail, Context};
use crpo_sdk::ScoreRequest;
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ScoreArgs {
    /// Objectives to apply, by plugin name, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub objectives: Vec<String>,
    /// JSONL file: one record per line with a `completion` field.
    #[arg(long)]
    pub input: PathBuf,
    /// Options per objective, as a JSON object: `{"length_budget": {"budget": 512}}`.
    #[arg(long, value_name = "JSON")]
    pub options: Option<String>,
    /// Where to write the scored JSONL (default: standard output).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

pub fn run(registry: &PluginRegistry, args: &ScoreArgs) -> anyhow::Result<()> {
    let mut options = match &args.options {
        Some(json) => serde_json::from_str::<Map<String, Value>>(json)
            .context("--options must be a JSON object of objective name to its options")?,
        None => Map::new(),
    };
    let objectives = args
        .objectives
        .iter()
        .map(|plugin| {
            let spec = ObjectiveSpec {
                name: None,
                plugin: plugin.clone(),
                weight: None,
                options: options.remove(plugin).unwrap_or(Value::Null),
            };
            ConfiguredObjective::create(registry, &spec)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(unused) = options.keys().next() {
        bail!("--options names `{unused}`, which is not among --objectives");
    }
    let file =
        std::fs::File::open(&args.input).with_context(|| format!("cannot open {}", args.input.display()))?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let input = args.input.display().to_string();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line_no = index + 1;
        let line = line.with_context(|| format!("{input}:{line_no}: cannot read"))?;
        if line.trim().is_empty() {
            continue;
        }
        let record = score_line(&objectives, &line, &input, line_no)?;
        serde_json::to_writer(&mut out, &record)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

fn score_line(
    objectives: &[ConfiguredObjective],
    line: &str,
    input: &str,
    line_no: usize,
) -> anyhow::Result<Value> {
    let record: Value =
        serde_json::from_str(line).with_context(|| format!("{input}:{line_no}: not valid JSON"))?;
    let Some(completion) = record.get("completion").and_then(Value::as_str) else {
        bail!("{input}:{line_no}: field `completion`: missing or not a string");
    };
    let example = crpo_plugins_datasets::example_from_any_record(&record, &format!("{input}:{line_no}"))
        .map_err(|(field, message)| anyhow::anyhow!("{input}:{line_no}: field `{field}`: {message}"))?;
    let prompt = example.prompt.question().to_string();
    let completions = [completion];
    let request = ScoreRequest {
        example: &example,
        prompt: &prompt,
        completions: &completions,
    };
    let mut scores = Map::new();
    for objective in objectives {
        let score = objective
            .score_group(&request)
            .with_context(|| format!("{input}:{line_no}"))?
            .remove(0);
        let diagnostics: Map<String, Value> = score
            .diagnostics
            .into_iter()
            .map(|(k, v)| (k, json!(v)))
            .collect();
        scores.insert(
            objective.name.clone(),
            json!({"score": score.value, "diagnostics": diagnostics}),
        );
    }
    Ok(json!({"line": line_no, "id": example.id, "completion": completion, "scores": scores}))
}
