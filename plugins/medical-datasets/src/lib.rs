//! Built-in medical dataset readers. Each format module turns one record into an
//! [`Example`]; [`JsonlReader`] reads a file of such records line by line.

pub mod demo;
pub mod generic;
pub mod medmcqa;
pub mod medqa;
pub mod medxpertqa;
pub mod pubmedqa;
pub mod records;

use crpo_sdk::{DatasetPlugin, DatasetRead, DatasetSource, Example, PluginError, PluginInfo, RecordError};
use serde_json::{Map, Value};
use std::io::{BufRead, BufReader};

/// Options of a reader that takes none (any key is refused by name).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoOptions {}

/// A record problem: the field and what is wrong with it.
pub type FieldError = (String, String);

type RecordParser = fn(&Map<String, Value>, &str) -> Result<Example, FieldError>;

/// Turns a record of any format the built-in readers know (or crpo's own example JSON under
/// `example`) into an example; used where the format is not configured, as by `crpo-host score`.
pub fn example_from_any_record(record: &Value, id: &str) -> Result<Example, FieldError> {
    let Value::Object(record) = record else {
        return Err(("record".into(), "not a JSON object".into()));
    };
    if let Some(example) = record.get("example") {
        return serde_json::from_value(example.clone()).map_err(|e| ("example".into(), e.to_string()));
    }
    if medqa::looks_like(record) {
        return medqa::parse(record, id);
    }
    Err((
        "record".into(),
        "not a known dataset format (MedQA, or crpo's `example`)".into(),
    ))
}

/// A JSONL dataset whose records one parser understands.
pub struct JsonlReader {
    name: &'static str,
    description: &'static str,
    parse: RecordParser,
}

impl DatasetPlugin for JsonlReader {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(self.name, env!("CARGO_PKG_VERSION"), self.description)
    }

    fn read(&self, source: &DatasetSource) -> Result<DatasetRead, PluginError> {
        let file_name = source.path.display().to_string();
        let file = std::fs::File::open(&source.path)
            .map_err(|e| PluginError::failed(format!("cannot open {file_name}: {e}")))?;
        let mut read = DatasetRead::default();
        for (index, line) in BufReader::new(file).lines().enumerate() {
            let line_no = index + 1;
            let line = line.map_err(|e| PluginError::failed(format!("{file_name}:{line_no}: {e}")))?;
            if line.trim().is_empty() {
                continue;
            }
            let malformed = |field: String, message: String| RecordError {
                file: file_name.clone(),
                line: line_no,
                field,
                message,
            };
            match serde_json::from_str::<Value>(&line) {
                Ok(Value::Object(record)) => match (self.parse)(&record, &format!("{file_name}:{line_no}")) {
                    Ok(example) => read.examples.push(example),
                    Err((field, message)) => read.malformed.push(malformed(field, message)),
                },
                Ok(_) => read
                    .malformed
                    .push(malformed("record".into(), "not a JSON object".into())),
                Err(e) => read
                    .malformed
                    .push(malformed("record".into(), format!("invalid JSON: {e}"))),
            }
        }
        Ok(read)
    }
}

pub static MEDQA: JsonlReader = JsonlReader {
    name: "medqa",
    description: "MedQA (USMLE) JSONL: question, options {A..E}, answer_idx",
    parse: medqa::parse,
};
crpo_sdk::register_dataset!(MEDQA);
