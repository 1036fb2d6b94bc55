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
mod whole_object;

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
        // These readers take no options: a key given is a mistake, named.
        crpo_sdk::parse_options::<crpo_sdk::NoOptions>(&source.options)?;
        records::read_records(&source.path, self.parse)
    }
}

pub static MEDQA: JsonlReader = JsonlReader {
    name: "medqa",
    description: "MedQA (USMLE) JSONL: question, options {A..E}, answer_idx",
    parse: medqa::parse,
};
crpo_sdk::register_dataset!(MEDQA);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_without_options_name_one_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        std::fs::write(
            &path,
            "{\"question\": \"q\", \"options\": {\"A\": \"x\"}, \"answer_idx\": \"A\"}\n",
        )
        .unwrap();
        let read = |options| {
            MEDQA.read(&DatasetSource {
                path: path.clone(),
                options,
            })
        };
        assert_eq!(read(Value::Null).unwrap().examples.len(), 1);
        let error = read(serde_json::json!({"question": "prompt"}))
            .unwrap_err()
            .to_string();
        assert!(error.contains("question"), "{error}");
    }
}
