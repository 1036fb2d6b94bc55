//! MedMCQA, JSONL: `{"id", "question", "opa", "opb", "opc", "opd", "cop", "choice_type", "exp",
//! "subject_name", "topic_name"}`. The answer `cop` is 1–4 in the original release and 0–3 in
//! the Hugging Face export. Option `cop_base` says which: `"auto"` (default) decides per file
//! — a 0 anywhere means 0–3, a 4 anywhere means 1–4, and a file with neither is refused as
//! ambiguous; `1` or `0` state it. Records without an answer (the test split) are malformed.
//! `exp`, the explanation, is kept in the metadata with every other field; records carry no
//! reference completion (an explanation is not a completion in the format a preset trains), so
//! `sft` needs another source (the `jsonl` reader's `reference_completion` field mapping).

use crate::records::{
    file_records, integer_value, metadata_without, parse_records, question_field, string_field, Records,
};
use crate::FieldError;
use crpo_sdk::{
    parse_options, AnswerOption, DatasetPlugin, DatasetRead, DatasetSource, Example, PluginError, PluginInfo,
    Prompt,
};
use serde::Deserialize;
use serde_json::{Map, Value};

const OPTION_FIELDS: [(&str, &str); 4] = [("A", "opa"), ("B", "opb"), ("C", "opc"), ("D", "opd")];

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Options {
    /// `"auto"` (or absent), 0 or 1.
    #[serde(default)]
    cop_base: Option<Value>,
}

fn cop(record: &Map<String, Value>) -> Result<i64, FieldError> {
    match record.get("cop") {
        None => Err((
            "cop".into(),
            "missing: no answer (the test split has none)".into(),
        )),
        Some(Value::Null) => Err(("cop".into(), "null: no answer (a gap in the column)".into())),
        Some(value) => match integer_value(value) {
            // The Hugging Face test split marks its unreleased answers so.
            Some(-1) => Err((
                "cop".into(),
                "-1: no answer (the Hugging Face test split has none)".into(),
            )),
            Some(index) => Ok(index),
            None => Err(("cop".into(), format!("{value} is not an integer"))),
        },
    }
}

fn parse(record: &Map<String, Value>, id: &str, base: i64) -> Result<Example, FieldError> {
    let question = question_field(record, "question")?;
    let mut options = Vec::with_capacity(4);
    for (key, field) in OPTION_FIELDS {
        options.push(AnswerOption {
            key: key.into(),
            text: string_field(record, field)?.to_string(),
        });
    }
    let cop = cop(record)?;
    let index = cop
        .checked_sub(base)
        .filter(|index| (0..4).contains(index))
        .ok_or_else(|| {
            (
                "cop".to_string(),
                format!("{cop} is out of range for {base}-based answers"),
            )
        })?;
    let answer = OPTION_FIELDS[index as usize].0.to_string();
    let id = record.get("id").and_then(Value::as_str).unwrap_or(id).to_string();
    Ok(Example {
        id,
        prompt: Prompt::Text(question.to_string()),
        answer: Some(answer),
        options,
        reference_completion: None,
        // `cop`, `opa`…`opd` and `id` stay: columns a TRL reward function may name.
        metadata: metadata_without(record, &["question"]),
    })
}

pub struct MedMcqaReader;

impl DatasetPlugin for MedMcqaReader {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            "medmcqa",
            env!("CARGO_PKG_VERSION"),
            "MedMCQA JSONL: question, opa..opd, cop (1-4 original or 0-3 Hugging Face, detected; option cop_base)",
        )
    }

    fn read(&self, source: &DatasetSource) -> Result<DatasetRead, PluginError> {
        let options: Options = parse_options(&source.options)?;
        let file_name = source.path.display().to_string();
        let records = file_records(&source.path)?;
        let base = match options.cop_base {
            None => detect_base(&file_name, &records)?,
            Some(Value::String(s)) if s == "auto" => detect_base(&file_name, &records)?,
            Some(Value::Number(n)) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => {
                n.as_i64().unwrap_or(1)
            }
            Some(other) => {
                return Err(PluginError::InvalidOption {
                    option: "cop_base".into(),
                    message: format!("{other}: expected \"auto\", 0 or 1"),
                })
            }
        };
        Ok(parse_records(&file_name, records, |record, id| {
            parse(record, id, base)
        }))
    }
}

/// 0 if any answer is 0, 1 if any is 4; otherwise the file cannot tell.
fn detect_base(file_name: &str, records: &Records) -> Result<i64, PluginError> {
    let answers: Vec<i64> = records
        .iter()
        .filter_map(|(_, record)| record.as_ref().ok())
        .filter_map(|record| record.as_object().and_then(|r| cop(r).ok()))
        .collect();
    if answers.contains(&0) {
        Ok(0)
    } else if answers.contains(&4) || answers.is_empty() {
        // No answers at all: every record is malformed anyway, whatever the base.
        Ok(1)
    } else {
        Err(PluginError::failed(format!(
            "{}: the answers (`cop`) are all 1-3, so the file does not show whether they are 1-based (original \
             release) or 0-based (Hugging Face export); set the dataset option cop_base = 1 or 0",
            file_name
        )))
    }
}

pub static MEDMCQA: MedMcqaReader = MedMcqaReader;
crpo_sdk::register_dataset!(MEDMCQA);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source(lines: &[Value], options: Value) -> (tempfile::TempDir, DatasetSource) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("medmcqa.jsonl");
        std::fs::write(&path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        (dir, DatasetSource { path, options })
    }

    fn record(cop: Value) -> Value {
        json!({"id": "q1", "question": "Drug of choice?", "opa": "a", "opb": "b", "opc": "c", "opd": "d",
               "cop": cop, "choice_type": "single", "exp": "because", "subject_name": "Pharmacology"})
    }

    /// pandas writes `cop` as 1.0 when the column has a gap; an absurd one is out of range,
    /// and the test split's -1 is no answer (not evidence of 1-3 answers).
    #[test]
    fn float_cops_read_and_absurd_ones_are_named() {
        let (_d, floats) = source(&[record(json!(4.0)), record(json!(1.0))], Value::Null);
        let read = MEDMCQA.read(&floats).unwrap();
        assert_eq!(read.examples[0].answer.as_deref(), Some("D"));
        let (_d, minimum) = source(
            &[record(json!(i64::MIN)), record(json!(4))],
            json!({"cop_base": 1}),
        );
        let read = MEDMCQA.read(&minimum).unwrap();
        assert!(
            read.malformed[0].message.contains("out of range"),
            "{:?}",
            read.malformed
        );
        let (_d, test_split) = source(&[record(json!(-1))], json!({"cop_base": 0}));
        let read = MEDMCQA.read(&test_split).unwrap();
        assert!(
            read.malformed[0].message.contains("no answer"),
            "{:?}",
            read.malformed
        );
    }

    #[test]
    fn detects_one_based_and_zero_based_answers() {
        let (_d, one_based) = source(&[record(json!(4)), record(json!(1))], Value::Null);
        let read = MEDMCQA.read(&one_based).unwrap();
        assert_eq!(
            read.examples
                .iter()
                .map(|e| e.answer.clone().unwrap())
                .collect::<Vec<_>>(),
            ["D", "A"]
        );
        let (_d, zero_based) = source(&[record(json!(0)), record(json!(1))], Value::Null);
        let read = MEDMCQA.read(&zero_based).unwrap();
        assert_eq!(
            read.examples
                .iter()
                .map(|e| e.answer.clone().unwrap())
                .collect::<Vec<_>>(),
            ["A", "B"]
        );
        assert_eq!(read.examples[0].id, "q1");
        assert_eq!(read.examples[0].metadata["subject_name"], "Pharmacology");
    }

    #[test]
    fn an_ambiguous_file_asks_for_cop_base_which_then_decides() {
        let (_d, ambiguous) = source(&[record(json!(2)), record(json!(3))], Value::Null);
        let err = MEDMCQA.read(&ambiguous).unwrap_err().to_string();
        assert!(err.contains("cop_base"), "{err}");
        let (_d, stated) = source(&[record(json!(2)), record(json!("3"))], json!({"cop_base": 0}));
        let read = MEDMCQA.read(&stated).unwrap();
        assert_eq!(
            read.examples
                .iter()
                .map(|e| e.answer.clone().unwrap())
                .collect::<Vec<_>>(),
            ["C", "D"]
        );
        let (_d, bad) = source(&[record(json!(2))], json!({"cop_base": 2}));
        assert!(MEDMCQA.read(&bad).unwrap_err().to_string().contains("cop_base"));
    }

    #[test]
    fn test_split_records_without_answers_are_malformed_with_their_line() {
        let mut no_answer = record(json!(1));
        no_answer.as_object_mut().unwrap().remove("cop");
        let (_d, src) = source(&[record(json!(4)), no_answer, record(Value::Null)], Value::Null);
        let read = MEDMCQA.read(&src).unwrap();
        assert_eq!(read.examples.len(), 1);
        assert_eq!(
            (read.malformed[0].line, read.malformed[0].field.as_str()),
            (2, "cop")
        );
        // A null (a pandas gap) is said as it is, not as a missing field.
        assert!(
            read.malformed[1].message.starts_with("null"),
            "{}",
            read.malformed[1].message
        );
    }
}
