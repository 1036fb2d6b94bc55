//! `crpo-host data check`: a dataset read through its reader before a long run — counts, every
//! malformed record (file:line, up to a limit), the gold answers' distribution, prompt lengths
//! against `max_prompt_length`, and the first examples exactly as the model will be asked them.

use crate::control_chars::visible;
use crate::plugins::PluginRegistry;
use crate::rollout::tokenizer::ChatTokenizer;
use crate::train::config::{default_prompt_template, PromptTruncation, DEFAULT_MAX_PROMPT_LENGTH};
use crate::train::data::{messages, PromptFormat, PromptLength};
use anyhow::{bail, Context};
use crpo_policy_sdk::lora;
use crpo_sdk::{DatasetSource, Example, RecordError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(clap::Subcommand)]
pub enum DataCommand {
    /// Read a dataset through its reader and report what a run would get from it.
    Check(CheckArgs),
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// A run config: its reader, options, files (data.path and data.eval_path), model
    /// (tokenizer and chat template), system prompt, template and max_prompt_length.
    #[arg(long, conflicts_with_all = ["dataset", "path"], value_parser = crate::home_path::path_argument)]
    pub config: Option<PathBuf>,
    /// The reader (a dataset plugin's name), with --path instead of --config.
    #[arg(long, requires = "path")]
    pub dataset: Option<String>,
    /// The file to read, with --dataset.
    #[arg(long, requires = "dataset", value_parser = crate::home_path::path_argument)]
    pub path: Option<PathBuf>,
    /// The reader's options as a JSON object, with --dataset.
    #[arg(long, value_name = "JSON", visible_alias = "dataset-options")]
    pub options: Option<String>,
    /// A model directory whose tokenizer and chat template render the prompts, with
    /// --dataset (without one, no token lengths and no chat template).
    #[arg(long, value_parser = crate::home_path::path_argument)]
    pub model: Option<PathBuf>,
    /// The system prompt, with --dataset.
    #[arg(long)]
    pub system_prompt: Option<String>,
    /// The prompt-length limit, with --dataset (the config's default otherwise).
    #[arg(long)]
    pub max_prompt_length: Option<usize>,
    /// How many examples to print as the model sees them.
    #[arg(long, default_value_t = 3)]
    pub show: usize,
    /// How many malformed records to list (all are counted).
    #[arg(long, default_value_t = 50)]
    pub max_errors: usize,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What one file gives a run.
#[derive(Debug, Serialize)]
pub struct FileReport {
    pub file: String,
    pub dataset: String,
    pub examples: usize,
    pub malformed: usize,
    /// The first `max_errors` malformed records, as `file:line: field `f`: message`.
    pub malformed_records: Vec<String>,
    /// Gold answers and how many examples have each, most frequent first.
    pub answers: Vec<(String, usize)>,
    pub without_answer: usize,
    /// Number of answer options → number of examples.
    pub options_per_example: BTreeMap<usize, usize>,
    pub with_reference_completion: usize,
    /// Examples that repeat an earlier one's id (samples and evaluations name examples by
    /// id), and the first such id.
    pub repeated_ids: usize,
    pub first_repeated_id: Option<String>,
    /// Prompt lengths in tokens (chat template and system prompt included), when a tokenizer
    /// is known.
    pub prompt_tokens: Option<LengthSummary>,
    /// Examples a run could not ask at all (rendered as the run would: the chat template and
    /// system prompt alone over `max_prompt_length`, a template that fails on the record),
    /// and the first `max_errors` of the reasons, each with its example.
    pub cannot_be_asked: usize,
    pub cannot_be_asked_examples: Vec<String>,
    pub shown: Vec<ShownExample>,
}

#[derive(Debug, Serialize)]
pub struct LengthSummary {
    pub min: usize,
    pub median: usize,
    pub p95: usize,
    pub max: usize,
    /// The longest prompt was too long to tokenize whole: `max` is a lower bound.
    pub max_is_lower_bound: bool,
    pub limit: usize,
    pub over_limit: usize,
}

/// An example as the model will see it.
#[derive(Debug, Serialize)]
pub struct ShownExample {
    pub id: String,
    pub answer: Option<String>,
    pub prompt: String,
}

/// How prompts are rendered: the run's format, with the tokenizer when one is known.
struct Rendering {
    format: PromptFormat,
    tokenizer: Option<ChatTokenizer>,
}

pub fn run(dirs: &[PathBuf], args: &DataArgs) -> anyhow::Result<()> {
    let DataCommand::Check(args) = &args.command;
    let reports = check(dirs, args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for report in &reports {
            print_report(report);
        }
    }
    let malformed: usize = reports.iter().map(|r| r.malformed).sum();
    if malformed > 0 {
        let listed: usize = reports.iter().map(|r| r.malformed_records.len()).sum();
        if listed == 0 {
            bail!("{malformed} malformed record(s) (raise --max-errors to list them)");
        }
        bail!(
            "{malformed} malformed record(s) ({})",
            if args.json {
                "listed in the JSON's malformed_records"
            } else {
                "listed above"
            }
        );
    }
    let unaskable: usize = reports.iter().map(|r| r.cannot_be_asked).sum();
    if unaskable > 0 {
        let first = reports
            .iter()
            .find_map(|r| r.cannot_be_asked_examples.first())
            .map_or(String::new(), |reason| format!(": {}", visible(reason)));
        bail!(
            "{unaskable} example(s) cannot be asked as a run would render them (a run refuses them){first}"
        );
    }
    if let Some(empty) = reports.iter().find(|r| r.examples == 0) {
        bail!(
            "{} holds no examples for dataset `{}`: a run would have nothing to train on",
            empty.file,
            empty.dataset
        );
    }
    Ok(())
}

/// The reports of every file the arguments name.
pub fn check(dirs: &[PathBuf], args: &CheckArgs) -> anyhow::Result<Vec<FileReport>> {
    let (dataset, options, files, rendering, registry) = match &args.config {
        Some(path) => {
            let (config, registry) = super::train::load(dirs, path)?;
            let rendering = Rendering {
                format: PromptFormat::from_config(&config, &registry)?,
                tokenizer: Some(tokenizer_of(&config.model.path)?),
            };
            let files = [Some(config.data.path.clone()), config.data.eval_path.clone()];
            let options = serde_json::to_value(&config.data.options)?;
            (
                config.data.dataset,
                options,
                files.into_iter().flatten().collect(),
                rendering,
                registry,
            )
        }
        None => {
            let (Some(dataset), Some(path)) = (&args.dataset, &args.path) else {
                bail!("data check needs --config run.toml, or --dataset NAME --path FILE");
            };
            let options = match &args.options {
                Some(json) => match serde_json::from_str(json) {
                    Ok(object @ serde_json::Value::Object(_)) => object,
                    _ => bail!(
                        "--options must be a JSON object of the reader's options, e.g. '{{\"cop_base\": 0}}'"
                    ),
                },
                None => serde_json::Value::Null,
            };
            let tokenizer = args.model.as_deref().map(tokenizer_of).transpose()?;
            let rendering = Rendering {
                format: PromptFormat {
                    template: default_prompt_template(),
                    system: args.system_prompt.clone(),
                    max_tokens: args.max_prompt_length.unwrap_or(DEFAULT_MAX_PROMPT_LENGTH),
                    truncation: PromptTruncation::Left,
                },
                tokenizer,
            };
            let registry = PluginRegistry::load(dirs)?;
            (dataset.clone(), options, vec![path.clone()], rendering, registry)
        }
    };
    let plugin = registry.dataset(&dataset)?;
    files
        .iter()
        .map(|file| {
            let source = DatasetSource {
                path: file.clone(),
                options: options.clone(),
            };
            let read = crate::plugins::dataset_read::read_through(plugin, &source)?;
            report(&dataset, file, &read.examples, &read.malformed, &rendering, args)
        })
        .collect()
}

/// The tokenizer of a model directory, or of an adapter directory's base model.
fn tokenizer_of(dir: &Path) -> anyhow::Result<ChatTokenizer> {
    let dir = if !dir.join("tokenizer.json").exists() && dir.join(lora::ADAPTER_CONFIG).exists() {
        lora::read_adapter_config(dir)?.1
    } else {
        dir.to_path_buf()
    };
    ChatTokenizer::from_dir(&dir).with_context(|| format!("cannot read the tokenizer of {}", dir.display()))
}

fn report(
    dataset: &str,
    file: &Path,
    examples: &[Example],
    malformed: &[RecordError],
    rendering: &Rendering,
    args: &CheckArgs,
) -> anyhow::Result<FileReport> {
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    let mut options_per_example = BTreeMap::new();
    for example in examples {
        if let Some(answer) = &example.answer {
            *answers.entry(answer.clone()).or_default() += 1;
        }
        *options_per_example.entry(example.options.len()).or_default() += 1;
    }
    let mut answers: Vec<(String, usize)> = answers.into_iter().collect();
    answers.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let (prompt_tokens, unaskable) = match &rendering.tokenizer {
        Some(tokenizer) => {
            let (summary, unaskable) = measure_prompts(tokenizer, &rendering.format, examples)?;
            (Some(summary), unaskable)
        }
        None => (None, Vec::new()),
    };
    let shown = examples
        .iter()
        .take(args.show)
        .map(|example| shown(rendering, example))
        .collect::<anyhow::Result<_>>()?;
    let repeated = crate::plugins::dataset_read::repeated_ids(examples);
    Ok(FileReport {
        file: file.display().to_string(),
        dataset: dataset.to_string(),
        examples: examples.len(),
        malformed: malformed.len(),
        malformed_records: malformed
            .iter()
            .take(args.max_errors)
            .map(|e| e.to_string())
            .collect(),
        without_answer: examples.iter().filter(|e| e.answer.is_none()).count(),
        answers,
        options_per_example,
        with_reference_completion: examples.iter().filter(|e| e.usable_reference().is_some()).count(),
        repeated_ids: repeated.as_ref().map_or(0, |(count, _)| *count),
        first_repeated_id: repeated.map(|(_, first)| first),
        prompt_tokens,
        cannot_be_asked: unaskable.len(),
        cannot_be_asked_examples: unaskable.into_iter().take(args.max_errors).collect(),
        shown,
    })
}

/// Every example's full prompt length (before any truncation) against the limit, and why a
/// run would refuse the examples it cannot ask: one rendering each.
fn measure_prompts(
    tokenizer: &ChatTokenizer,
    format: &PromptFormat,
    examples: &[Example],
) -> anyhow::Result<(LengthSummary, Vec<String>)> {
    let mut lengths = Vec::with_capacity(examples.len());
    let mut unaskable = Vec::new();
    for example in examples {
        let measured = format.measure(tokenizer, example)?;
        lengths.push(measured.length);
        if let Err(error) = measured.rendered {
            unaskable.push(format!("example `{}`: {error:#}", example.id));
        }
    }
    Ok((length_summary(lengths, format.max_tokens), unaskable))
}

fn length_summary(mut lengths: Vec<PromptLength>, limit: usize) -> LengthSummary {
    lengths.sort_unstable_by_key(|length| length.tokens());
    let at = |share: f64| {
        let index = ((lengths.len() as f64 - 1.0) * share).round() as usize;
        lengths.get(index).map_or(0, |length| length.tokens())
    };
    LengthSummary {
        min: at(0.0),
        median: at(0.5),
        p95: at(0.95),
        max: at(1.0),
        max_is_lower_bound: matches!(lengths.last(), Some(PromptLength::AtLeast(_))),
        limit,
        over_limit: lengths.iter().filter(|length| length.tokens() > limit).count(),
    }
}

/// The prompt text the model is given: the chat template applied (and truncation, as the
/// run would), or the chat turns as `role: content` without a tokenizer. A prompt the run
/// could not ask says why.
fn shown(rendering: &Rendering, example: &Example) -> anyhow::Result<ShownExample> {
    let format = &rendering.format;
    let prompt = match &rendering.tokenizer {
        Some(tokenizer) => match format.render(tokenizer, example) {
            Ok(Some(rendered)) if rendered.truncated => {
                format!("{}\n[cut to fit max_prompt_length]", rendered.text)
            }
            Ok(Some(rendered)) => rendered.text,
            Ok(None) => "[skipped: over max_prompt_length]".to_string(),
            Err(error) => format!("[cannot be asked: {error:#}]"),
        },
        None => messages(example, &format.template, format.system.as_deref())
            .iter()
            .map(|m| format!("{}: {}", m.role, m.content))
            .collect::<Vec<_>>()
            .join("\n"),
    };
    Ok(ShownExample {
        id: example.id.clone(),
        answer: example.answer.clone(),
        prompt: shortened(prompt),
    })
}

/// Characters of a prompt shown: a record of megabytes (which a run cuts to
/// max_prompt_length tokens) is not printed whole.
const MAX_SHOWN_CHARS: usize = 8_000;

fn shortened(prompt: String) -> String {
    let total = prompt.chars().count();
    if total <= MAX_SHOWN_CHARS {
        return prompt;
    }
    let kept: String = prompt.chars().take(MAX_SHOWN_CHARS).collect();
    format!(
        "{kept}\n[… {} more characters not shown]",
        total - MAX_SHOWN_CHARS
    )
}

fn print_report(report: &FileReport) {
    println!("{} (dataset `{}`)", report.file, report.dataset);
    println!("  examples                 {}", report.examples);
    println!("  malformed records        {}", report.malformed);
    for record in &report.malformed_records {
        println!("    {}", visible(record));
    }
    if report.malformed > report.malformed_records.len() {
        println!("    … {} more", report.malformed - report.malformed_records.len());
    }
    println!(
        "  with a reference completion  {}",
        report.with_reference_completion
    );
    if let Some(first) = &report.first_repeated_id {
        println!(
            "  repeated ids             {} (first: `{}`)",
            report.repeated_ids,
            visible(first)
        );
    }
    let options: Vec<String> = report
        .options_per_example
        .iter()
        .map(|(options, count)| format!("{options} options: {count}"))
        .collect();
    println!("  options per example      {}", options.join(", "));
    println!(
        "  gold answers             {} distinct, {} without one",
        report.answers.len(),
        report.without_answer
    );
    for (answer, count) in report.answers.iter().take(20) {
        let share = 100.0 * *count as f64 / report.examples.max(1) as f64;
        let answer = visible(answer);
        println!("    {answer:<24} {count:>7}  {share:5.1}%");
    }
    if report.answers.len() > 20 {
        println!("    … {} more answers", report.answers.len() - 20);
    }
    match &report.prompt_tokens {
        Some(l) => println!(
            "  prompt tokens            min {}, median {}, p95 {}, max {}{}; {} over max_prompt_length = {}",
            l.min,
            l.median,
            l.p95,
            if l.max_is_lower_bound { "at least " } else { "" },
            l.max,
            l.over_limit,
            l.limit
        ),
        None => println!("  prompt tokens            (no tokenizer: give --model or --config)"),
    }
    if report.cannot_be_asked > 0 {
        println!("  cannot be asked          {}", report.cannot_be_asked);
        for reason in &report.cannot_be_asked_examples {
            println!("    {}", visible(reason));
        }
        if report.cannot_be_asked > report.cannot_be_asked_examples.len() {
            println!(
                "    … {} more",
                report.cannot_be_asked - report.cannot_be_asked_examples.len()
            );
        }
    }
    for example in &report.shown {
        println!(
            "\n  --- {} (gold: {}) ---",
            visible(&example.id),
            visible(example.answer.as_deref().unwrap_or("none"))
        );
        // A record's control characters are shown, not sent to the terminal.
        for line in example.prompt.lines() {
            println!("  {}", visible(line));
        }
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_ranks_lengths_and_says_when_the_longest_is_a_lower_bound() {
        let exact = [7, 3, 90, 12].map(PromptLength::Exact).to_vec();
        let summary = length_summary(exact.clone(), 50);
        assert_eq!(
            (summary.min, summary.median, summary.max, summary.over_limit),
            (3, 12, 90, 1)
        );
        assert!(!summary.max_is_lower_bound);
        let mut with_huge = exact;
        with_huge.push(PromptLength::AtLeast(4_000));
        let summary = length_summary(with_huge, 50);
        assert_eq!((summary.max, summary.over_limit), (4_000, 2));
        assert!(summary.max_is_lower_bound);
        let none = length_summary(Vec::new(), 50);
        assert_eq!(
            (none.max, none.over_limit, none.max_is_lower_bound),
            (0, 0, false)
        );
    }
}
