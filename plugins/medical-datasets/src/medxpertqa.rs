//! MedXpertQA (Text), JSONL: `{"id", "question" (options also inline in the text), "options":
//! {"A".."J"}, "label": "C", "medical_task", "body_system", "question_type"}`. The question
//! text already lists the options, so the prompt template's `{options}` should be left out
//! for this reader (docs/datasets.md); the options are still given to the objectives.

use crate::records::{metadata_without, options_from_object, question_field, read_records, string_field};
use crate::FieldError;
use crpo_sdk::{
    parse_options, DatasetPlugin, DatasetRead, DatasetSource, Example, PluginError, PluginInfo, Prompt,
};
use serde_json::{Map, Value};

pub fn parse(record: &Map<String, Value>, id: &str) -> Result<Example, FieldError> {
    let question = question_field(record, "question")?;
    let options = options_from_object(record, "options")?;
    let label = string_field(record, "label")?;
    if !options.iter().any(|o| o.key == label) {
        return Err(("label".into(), format!("`{label}` is not one of the options")));
    }
    Ok(Example {
        id: record.get("id").and_then(Value::as_str).unwrap_or(id).to_string(),
        prompt: Prompt::Text(question.to_string()),
        answer: Some(label.to_string()),
        options,
        reference_completion: None,
        // `label` and `id` stay: columns a TRL reward function may name.
        metadata: metadata_without(record, &["question", "options"]),
    })
}

pub struct MedXpertQaReader;

impl DatasetPlugin for MedXpertQaReader {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            "medxpertqa",
            env!("CARGO_PKG_VERSION"),
            "MedXpertQA Text JSONL: question (options inline), options {A..J}, label",
        )
    }

    fn read(&self, source: &DatasetSource) -> Result<DatasetRead, PluginError> {
        parse_options::<crpo_sdk::NoOptions>(&source.options)?;
        read_records(&source.path, parse)
    }
}

pub static MEDXPERTQA: MedXpertQaReader = MedXpertQaReader;
crpo_sdk::register_dataset!(MEDXPERTQA);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_ten_options_and_checks_the_label() {
        let options: Map<String, Value> = ('A'..='J')
            .map(|c| (c.to_string(), json!(format!("option {c}"))))
            .collect();
        let record = json!({"id": "Text-1", "question": "Q? Answer Choices: (A) ...", "options": options,
            "label": "J", "medical_task": "Diagnosis", "body_system": "Cardiovascular", "question_type": "Reasoning"});
        let example = parse(record.as_object().unwrap(), "x:1").unwrap();
        assert_eq!(
            (
                example.id.as_str(),
                example.answer.as_deref(),
                example.options.len()
            ),
            ("Text-1", Some("J"), 10)
        );
        assert_eq!(example.metadata["body_system"], "Cardiovascular");
        let mut bad = record.clone();
        bad["label"] = json!("K");
        assert_eq!(parse(bad.as_object().unwrap(), "x:1").unwrap_err().0, "label");
    }
}
