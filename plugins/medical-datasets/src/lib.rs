//! Built-in medical dataset readers. Each format module turns one record into an
//! [`Example`]; [`records::read_records`] reads a file of such records (JSONL or a JSON array).

pub mod demo;
pub mod generic;
pub mod medmcqa;
pub mod medqa;
pub mod medxpertqa;
pub mod pubmedqa;
pub mod records;

use crpo_sdk::{DatasetPlugin, DatasetRead, DatasetSource, Example, PluginError, PluginInfo};
use serde_json::{Map, Value};

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

/// A JSONL (or JSON array) dataset whose records one parser understands.
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
        records::read_records(&source.path, self.parse)
    }
}

pub static MEDQA: JsonlReader = JsonlReader {
    name: "medqa",
    description: "MedQA (USMLE) JSONL: question, options {A..E}, answer_idx",
    parse: medqa::parse,
};
crpo_sdk::register_dataset!(MEDQA);
