//! `crpo-host score`: scores completions that already exist, so plugin authors can debug an
//! objective on real outputs. Each input line is a dataset record plus a `completion` string:
//! crpo's own example JSON under `example` (a run's samples.jsonl is such a file), or a record
//! the `--dataset` reader reads (MedQA by default). The output is written whole or not at all,
//! never over the input.

use crate::atomic_file::AtomicFile;
use crate::plugins::isolation::{timeout_of, Execution, Isolation};
use crate::plugins::{ConfiguredObjective, ObjectiveSpec, PluginRegistry};
use anyhow::{bail, Context};
use crpo_sdk::{DatasetSource, Example, ScoreRequest};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct ScoreArgs {
    /// Objectives to apply, by plugin name, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub objectives: Vec<String>,
    /// JSONL file: one record per line with a `completion` field (a run's samples.jsonl works).
    #[arg(long, value_parser = crate::home_path::path_argument)]
    pub input: PathBuf,
    /// The dataset reader for records that are not crpo's own `{"example": …}` form.
    #[arg(long, default_value = "medqa")]
    pub dataset: String,
    /// The reader's options, as a JSON object (a config's `data.options`): `{"cop_base": 1}`.
    #[arg(long, value_name = "JSON")]
    pub dataset_options: Option<String>,
    /// Options per objective, as a JSON object: `{"length_penalty": {"max_length": 512}}`.
    #[arg(long, value_name = "JSON")]
    pub options: Option<String>,
    /// Where to write the scored JSONL (default: standard output); never the input.
    #[arg(long, value_parser = crate::home_path::path_argument)]
    pub output: Option<PathBuf>,
    /// Run each objective in a worker process (`process`), so a plugin that crashes, exits
    /// or hangs fails the command naming it: a config's `isolation`.
    #[arg(long, value_enum, default_value = "in-process")]
    pub isolation: IsolationArg,
    /// Per-call limit in seconds (a config's `timeout_s`; default 300 in a worker or for a
    /// plugin not marked cheap, none for a cheap one in process).
    #[arg(long, value_name = "SECONDS")]
    pub timeout_s: Option<f64>,
}

/// `--isolation`'s values.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum IsolationArg {
    InProcess,
    Process,
}

pub fn run(registry: &PluginRegistry, args: &ScoreArgs) -> anyhow::Result<()> {
    // Before any objective loads (a Python module may print on import).
    let results = match &args.output {
        Some(_) => None,
        None => Some(claim_stdout()?),
    };
    let mut options = match &args.options {
        Some(json) => serde_json::from_str::<Map<String, Value>>(json)
            .context("--options must be a JSON object of objective name to its options")?,
        None => Map::new(),
    };
    // Checked before any objective is made: a mistyped --options key would otherwise show
    // as the objective's own missing option.
    if let Some(unused) = options.keys().find(|name| !args.objectives.contains(name)) {
        bail!(
            "--options names `{unused}`, which is not among --objectives ({})",
            args.objectives.join(",")
        );
    }
    let execution = Execution {
        isolation: match args.isolation {
            IsolationArg::InProcess => Isolation::InProcess,
            IsolationArg::Process => Isolation::Process,
        },
        timeout: match args.timeout_s {
            Some(s) => Some(timeout_of(s).with_context(|| {
                format!("--timeout-s must be a number of seconds above 0 and at most 1e9 (it is {s})")
            })?),
            None => None,
        },
        retries: 0,
    };
    if let Some(twice) = args
        .objectives
        .iter()
        .enumerate()
        .find_map(|(i, name)| args.objectives[..i].contains(name).then_some(name))
    {
        bail!("--objectives names `{twice}` twice: each objective once");
    }
    let objectives = args
        .objectives
        .iter()
        .map(|plugin| {
            let spec = ObjectiveSpec {
                name: None,
                plugin: plugin.clone(),
                weight: None,
                options: options.remove(plugin).unwrap_or(Value::Null),
                execution: execution.clone(),
            };
            ConfiguredObjective::create(registry, &spec)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(output) = &args.output {
        crate::atomic_file::refuse_replacing(output, "--output", &args.input, "the input file")?;
        crate::atomic_file::refuse_replacing_unless(output, "--output", "score output", is_score_output)?;
    }
    let dataset_options: Value = match &args.dataset_options {
        Some(json) => serde_json::from_str::<Map<String, Value>>(json)
            .map(Value::Object)
            .context("--dataset-options must be a JSON object of the reader's options")?,
        None => Value::Null,
    };
    let records = read_records(registry, &args.dataset, dataset_options, &args.input)?;
    let input = args.input.display().to_string();
    // Consecutive records of one example (a run's samples.jsonl lists a group's completions
    // one after another) are scored as one group, as training scores them: an objective that
    // compares a group's completions sees the same group here.
    let mut scored = Vec::with_capacity(records.len());
    for group in records.chunk_by(|a, b| same_example(&a.example, &b.example) && a.step == b.step) {
        scored.extend(score_group(&objectives, group, &input)?);
    }
    match &args.output {
        Some(path) => {
            let mut file = AtomicFile::create(path)?;
            for record in &scored {
                file.write_line(record)?;
            }
            file.commit()
        }
        None => {
            let results = results.context("standard output was not claimed")?;
            let mut out = std::io::BufWriter::new(results);
            for record in &scored {
                writeln!(out, "{record}")?;
            }
            out.flush().context("cannot write to standard output")
        }
    }
}

/// Standard output for the scored lines alone: from here on, whatever else writes to file
/// descriptor 1 — an objective's subprocess, a Python reward's `os.write(1, …)`, a C
/// library's printf — goes to standard error, never into the JSONL.
fn claim_stdout() -> anyhow::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    std::io::stdout()
        .flush()
        .context("cannot write to standard output")?;
    // SAFETY: dup and dup2 on this process's own standard descriptors; the duplicate is
    // owned by the returned File alone.
    unsafe {
        let results = libc::dup(1);
        if results < 0 {
            bail!(
                "cannot duplicate standard output: {}",
                std::io::Error::last_os_error()
            );
        }
        if libc::dup2(2, 1) < 0 {
            bail!(
                "cannot point standard output at standard error: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(std::fs::File::from_raw_fd(results))
    }
}

/// Whether two records are completions of one example: equal but for the id (a dataset
/// reader names each line's example by its line, `file:3`).
fn same_example(a: &Example, b: &Example) -> bool {
    a.prompt == b.prompt
        && a.answer == b.answer
        && a.options == b.options
        && a.reference_completion == b.reference_completion
        && a.metadata == b.metadata
}

/// A score output's rows: line, id, completion and scores (a run's samples.jsonl has scores
/// too, with its example: not ours to replace).
fn is_score_output(bytes: &[u8]) -> bool {
    crate::atomic_file::first_line_json(bytes).is_some_and(|row| {
        row.get("scores").is_some_and(Value::is_object)
            && row.get("line").is_some_and(Value::is_u64)
            && row.get("example").is_none()
    })
}

/// One record to score: its line, example and completion (and a run's step, if given).
struct Record {
    line: usize,
    example: Example,
    completion: String,
    step: Option<Value>,
}

/// Reads every record of `path`: crpo's own examples, or the dataset reader's (which names a
/// malformed record's line and field).
fn read_records(
    registry: &PluginRegistry,
    dataset: &str,
    dataset_options: Value,
    path: &Path,
) -> anyhow::Result<Vec<Record>> {
    // Named now, even when every record is crpo's own form: a mistyped --dataset is an error.
    let reader = registry.dataset(dataset).context("--dataset")?;
    let input = path.display().to_string();
    let text = std::fs::read(path).with_context(|| format!("cannot read {input}"))?;
    let text = String::from_utf8(text).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        anyhow::anyhow!("{input}:{line}: not UTF-8 text")
    })?;
    // Editors on Windows start a UTF-8 file with a byte-order mark; it is no part of line 1.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_no = index + 1;
        let record: Value =
            serde_json::from_str(line).with_context(|| format!("{input}:{line_no}: not valid JSON"))?;
        let Some(completion) = completion_text(record.get("completion")) else {
            bail!("{input}:{line_no}: field `completion`: missing, or neither a string nor a list of messages ending with the assistant's");
        };
        lines.push(Line {
            number: line_no,
            example: record.get("example").cloned(),
            completion: completion.to_string(),
            step: record.get("step").cloned(),
        });
    }
    if lines.is_empty() {
        bail!("{input} holds no records to score (one JSON object per line, each with a `completion`)");
    }
    let own_form = lines.iter().any(|line| line.example.is_some());
    if own_form {
        return lines
            .into_iter()
            .map(|line| {
                let number = line.number;
                let example = line
                    .example
                    .with_context(|| format!("{input}:{number}: field `example`: missing"))?;
                // The path inside the example (`example.options`), as the readers name fields.
                let example: Example = serde_path_to_error::deserialize(example).map_err(|e| {
                    let field = match e.path().to_string() {
                        root if root == "." => "example".to_string(),
                        path => format!("example.{path}"),
                    };
                    anyhow::anyhow!("{input}:{number}: field `{field}`: {}", e.inner())
                })?;
                Ok(Record {
                    line: number,
                    example,
                    completion: line.completion,
                    step: line.step,
                })
            })
            .collect();
    }
    let source = DatasetSource {
        path: path.to_path_buf(),
        options: dataset_options,
    };
    let read = crate::plugins::dataset_read::read_through(reader, &source)
        .with_context(|| format!("cannot read {input}"))?;
    if let Some(first) = read.malformed.first() {
        bail!("malformed record {first} (read with --dataset {dataset})");
    }
    if read.examples.len() != lines.len() {
        bail!(
            "{input}: dataset `{dataset}` read {} examples from {} records; every record must be one example",
            read.examples.len(),
            lines.len()
        );
    }
    let mut records: Vec<Record> = lines
        .into_iter()
        .zip(read.examples)
        .map(|(line, mut example)| {
            // The completion (and a run's step) are what is scored, not the example.
            example
                .metadata
                .retain(|key, _| key != "completion" && key != "step");
            Record {
                line: line.number,
                example,
                completion: line.completion,
                step: line.step,
            }
        })
        .collect();
    // A reader that takes `completion` as the reference (TRL's prompt-completion form, the
    // conversational reader's) gave each record the output scored as its reference: then no
    // record has one, or every record would be an example of its own, never in a group.
    if records
        .iter()
        .all(|r| r.example.reference_completion.as_deref() == Some(r.completion.as_str()))
    {
        for record in &mut records {
            record.example.reference_completion = None;
        }
    }
    Ok(records)
}

/// The completion to score: a string, or TRL's conversational form (a list of messages whose
/// last is the assistant's, its content a string).
fn completion_text(value: Option<&Value>) -> Option<&str> {
    match value? {
        Value::String(text) => Some(text),
        Value::Array(turns) => {
            let last = turns.last()?;
            (last.get("role")?.as_str()? == "assistant").then_some(())?;
            last.get("content")?.as_str()
        }
        _ => None,
    }
}

/// A line of the input, before its example is read.
struct Line {
    number: usize,
    example: Option<Value>,
    completion: String,
    step: Option<Value>,
}

/// Scores a group of records of one example together, a line of output each.
fn score_group(
    objectives: &[ConfiguredObjective],
    group: &[Record],
    input: &str,
) -> anyhow::Result<Vec<Value>> {
    let example = &group[0].example;
    let prompt = example.prompt.question().to_string();
    let completions: Vec<&str> = group.iter().map(|record| record.completion.as_str()).collect();
    let request = ScoreRequest::new(example, &prompt, &completions);
    let lines = match group {
        [one] => one.line.to_string(),
        [first, .., last] => format!("{}-{}", first.line, last.line),
        [] => return Ok(Vec::new()),
    };
    let mut scores = vec![Map::new(); group.len()];
    for objective in objectives {
        let group_scores = objective
            .score_group(&request)
            .with_context(|| format!("{input}:{lines}"))?;
        for (score, record_scores) in group_scores.into_iter().zip(&mut scores) {
            let diagnostics: Map<String, Value> = score
                .diagnostics
                .into_iter()
                .map(|(k, v)| (k, json!(v)))
                .collect();
            record_scores.insert(
                objective.name.clone(),
                // `+ 0.0` prints a negative zero (a penalty of 0 scaled) as 0.
                json!({"score": score.value + 0.0, "answer": score.answer, "diagnostics": diagnostics}),
            );
        }
    }
    Ok(group
        .iter()
        .zip(scores)
        .map(|(record, scores)| {
            json!({
                "line": record.line,
                "id": record.example.id,
                "completion": record.completion,
                "scores": scores,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Consecutive lines of one question read by a dataset reader (ids `file:1`, `file:2`)
    /// are one group, as in training; another question is another group.
    #[test]
    fn records_of_one_example_group_whatever_their_ids() {
        let registry = PluginRegistry::builtin_only();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("completions.jsonl");
        let record = |question: &str, completion: &str| {
            json!({"question": question, "answer_idx": "A", "options": {"A": "Yes", "B": "No"}, "completion": completion})
                .to_string()
        };
        let lines = [
            record("Is it?", "\\boxed{A}"),
            record("Is it?", "\\boxed{B}"),
            record("Is it not?", "\\boxed{A}"),
        ];
        std::fs::write(&path, lines.join("\n")).unwrap();
        let records = read_records(&registry, "medqa", Value::Null, &path).unwrap();
        assert_ne!(records[0].example.id, records[1].example.id);
        assert!(!records[0].example.metadata.contains_key("completion"));
        let groups: Vec<usize> = records
            .chunk_by(|a, b| same_example(&a.example, &b.example))
            .map(<[Record]>::len)
            .collect();
        assert_eq!(groups, [2, 1]);
    }

    /// TRL's conversational prompt-completion rows, and a conversational prompt beside the
    /// assistant's text: the completion to score is the assistant's.
    #[test]
    fn trl_s_conversational_rows_score_the_assistant_s_turn() {
        let registry = PluginRegistry::builtin_only();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conv.jsonl");
        let prompt = json!([{"role": "user", "content": "Dose?"}]);
        let lines = [
            json!({"prompt": prompt, "completion": [{"role": "assistant", "content": "\\boxed{140}"}], "answer": 140.0}),
            json!({"prompt": prompt, "completion": "\\boxed{7}", "answer": 140.0}),
        ];
        let text: Vec<String> = lines.iter().map(Value::to_string).collect();
        std::fs::write(&path, text.join("\n")).unwrap();
        let records = read_records(&registry, "conversational", Value::Null, &path).unwrap();
        let completions: Vec<&str> = records.iter().map(|r| r.completion.as_str()).collect();
        assert_eq!(completions, ["\\boxed{140}", "\\boxed{7}"]);
        assert_eq!(records[0].example.answer.as_deref(), Some("140.0"));
    }

    /// A malformed example in crpo's own form names the field inside it, as readers do.
    #[test]
    fn a_malformed_own_form_example_names_the_field_inside_it() {
        let registry = PluginRegistry::builtin_only();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples.jsonl");
        let read = |example: Value| {
            std::fs::write(&path, json!({"example": example, "completion": "x"}).to_string()).unwrap();
            read_records(&registry, "medqa", Value::Null, &path)
                .err()
                .unwrap()
                .to_string()
        };
        let options = read(json!({"id": "q", "question": "Q?", "options": {"A": "x"}}));
        assert!(
            options.contains("samples.jsonl:1: field `example.options`"),
            "{options}"
        );
        let not_an_object = read(json!(5));
        assert!(
            not_an_object.contains("samples.jsonl:1: field `example`: invalid type"),
            "{not_an_object}"
        );
    }
}
