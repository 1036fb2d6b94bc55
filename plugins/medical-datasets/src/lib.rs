//! Built-in medical dataset readers. Each format module turns one record into an
//! [`Example`]; [`records::read_records`] reads a file of such records (JSONL or a JSON array).

pub mod conversational;
pub mod generic;
pub mod medmcqa;
pub mod medqa;
pub mod medxpertqa;
mod parquet_rows;
pub mod pubmedqa;
pub mod records;

use crpo_sdk::{DatasetPlugin, DatasetRead, DatasetSource, Example, PluginError, PluginInfo};
use serde_json::{Map, Value};

/// A record problem: the field and what is wrong with it.
pub type FieldError = (String, String);

type RecordParser = fn(&Map<String, Value>, &str) -> Result<Example, FieldError>;

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
