//! `csv_mcq`: multiple-choice questions from a CSV file, columns named by the run config:
//!
//! ```toml
//! [[datasets]]
//! plugin = "csv_mcq"
//! path = "questions.csv"
//! options = { question = "stem", answer = "key", choices = { A = "opt_a", B = "opt_b" } }
//! ```
//!
//! `id` (a column) and `delimiter` (one character, default `,`) are optional. A row whose
//! answer is not one of the choice keys, or that lacks a mapped column, is reported with its
//! line and the column.

use crpo_sdk::{
    parse_options, AnswerOption, DatasetPlugin, DatasetRead, DatasetSource, Example, PluginError, PluginInfo,
    Prompt, RecordError,
};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    question: String,
    answer: String,
    choices: BTreeMap<String, String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default = "default_delimiter")]
    delimiter: char,
}

fn default_delimiter() -> char {
    ','
}

pub struct CsvMcqPlugin;

impl DatasetPlugin for CsvMcqPlugin {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            "csv_mcq",
            env!("CARGO_PKG_VERSION"),
            "multiple-choice questions from CSV with a column mapping",
        )
    }

    fn read(&self, source: &DatasetSource) -> Result<DatasetRead, PluginError> {
        let options: Options = parse_options(&source.options)?;
        if !options.delimiter.is_ascii() {
            return Err(PluginError::InvalidOption {
                option: "delimiter".into(),
                message: "must be one ASCII character".into(),
            });
        }
        let file = source.path.display().to_string();
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(options.delimiter as u8)
            .from_path(&source.path)
            .map_err(|e| PluginError::failed(format!("cannot open {file}: {e}")))?;
        let headers = reader
            .headers()
            .map_err(|e| PluginError::failed(format!("{file}: header: {e}")))?
            .clone();
        let column = |name: &str| -> Result<usize, PluginError> {
            headers
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| PluginError::InvalidOption {
                    option: name.to_string(),
                    message: format!(
                        "{file} has no column `{name}` (columns: {})",
                        headers.iter().collect::<Vec<_>>().join(", ")
                    ),
                })
        };
        let question = column(&options.question)?;
        let answer = column(&options.answer)?;
        let id = options.id.as_deref().map(column).transpose()?;
        let choices: Vec<(String, usize)> = options
            .choices
            .iter()
            .map(|(key, col)| Ok((key.clone(), column(col)?)))
            .collect::<Result<_, PluginError>>()?;

        let mut read = DatasetRead::default();
        for row in reader.records() {
            let row = match row {
                Ok(row) => row,
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line() as usize);
                    read.malformed.push(RecordError {
                        file: file.clone(),
                        line,
                        field: "row".into(),
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            let line = row.position().map_or(0, |p| p.line() as usize);
            let cell = |i: usize| row.get(i).unwrap_or("").to_string();
            let gold = cell(answer);
            if !options.choices.contains_key(&gold) {
                read.malformed.push(RecordError {
                    file: file.clone(),
                    line,
                    field: options.answer.clone(),
                    message: format!(
                        "`{gold}` is not one of the choices {:?}",
                        options.choices.keys().collect::<Vec<_>>()
                    ),
                });
                continue;
            }
            read.examples.push(Example {
                id: id.map_or_else(|| format!("{file}:{line}"), cell),
                prompt: Prompt::Text(cell(question)),
                answer: Some(gold),
                options: choices
                    .iter()
                    .map(|(key, i)| AnswerOption {
                        key: key.clone(),
                        text: cell(*i),
                    })
                    .collect(),
                ..Example::default()
            });
        }
        Ok(read)
    }
}

crpo_sdk::export_plugin_library! {
    rewards: [],
    datasets: [CsvMcqPlugin],
}
