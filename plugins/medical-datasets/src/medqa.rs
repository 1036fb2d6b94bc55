//! MedQA (USMLE), JSONL: `{"question", "answer" (text), "options": {"A": …}, "answer_idx": "C",
//! "meta_info", "metamap_phrases"}`. 4- and 5-option variants alike, and BigBio's source layout
//! (`options` a list of `{"key", "value"}`), and the options flattened into `options.A` …
//! columns (`Dataset.flatten()`, `pandas.json_normalize`, a Parquet export). crpo's own extension: an
//! optional `"reference_completion"` string, the target of the supervised cold start.

use crate::records::{metadata_without, options_from_object, question_field, string_field};
use crate::FieldError;
use crpo_sdk::rules::python_strip;
use crpo_sdk::{Example, Prompt};
use serde_json::{Map, Value};

/// `record` with flattened `options.A`, `options.B` … columns nested back under `options`
/// (a null one, as a Parquet struct of 4- and 5-option questions has, is no option); `None`
/// when it has an `options` field or no such column.
fn with_nested_options(record: &Map<String, Value>) -> Option<Map<String, Value>> {
    if record.contains_key("options") {
        return None;
    }
    let options: Map<String, Value> = record
        .iter()
        .filter_map(|(key, value)| Some((key.strip_prefix("options.")?.to_string(), value.clone())))
        .collect();
    if options.is_empty() {
        return None;
    }
    let mut nested: Map<String, Value> = record
        .iter()
        .filter(|(key, _)| !key.starts_with("options."))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    nested.insert("options".into(), Value::Object(options));
    Some(nested)
}

pub fn looks_like(record: &Map<String, Value>) -> bool {
    if let Some(nested) = with_nested_options(record) {
        return looks_like(&nested);
    }
    record.contains_key("question")
        && record
            .get("options")
            .is_some_and(|o| o.is_object() || crate::records::key_value_list(o).is_some())
        && (record.contains_key("answer_idx") || !record.contains_key("label"))
}

pub fn parse(record: &Map<String, Value>, id: &str) -> Result<Example, FieldError> {
    if let Some(nested) = with_nested_options(record) {
        return parse(&nested, id);
    }
    let question = question_field(record, "question")?;
    let options = options_from_object(record, "options")?;
    let answer = string_field(record, "answer_idx")?;
    let Some(gold) = options.iter().find(|o| o.key == answer) else {
        return Err((
            "answer_idx".into(),
            format!("`{answer}` is not one of the options"),
        ));
    };
    // MedQA states the answer twice; an export that re-keyed or shuffled the options keeps
    // `answer` and moves `answer_idx` (or the reverse): the gold would be another option.
    if let Some(Value::String(text)) = record.get("answer") {
        if comparable(text) != comparable(&gold.text) {
            return Err((
                "answer".into(),
                format!(
                    "`{text}` is not the text of option {answer} (`{}`), which answer_idx names: the answer and the options disagree (were the options re-keyed or shuffled?)",
                    gold.text
                ),
            ));
        }
    }
    let reference_completion = match record.get("reference_completion") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => return Err(("reference_completion".into(), "not a string".into())),
    };
    let metadata = metadata_without(
        record,
        // `answer_idx` stays, a column a TRL reward function may name; the options are the
        // example's (passed as `options`).
        &["question", "options", "reference_completion"],
    );
    Ok(Example {
        id: id.to_string(),
        prompt: Prompt::Text(question.to_string()),
        answer: Some(answer.to_string()),
        options,
        reference_completion,
        metadata,
    })
}

/// Text as two copies of one answer may differ: case, spacing, a final full stop (the rules'
/// own normalisation, edges and the stop dropped).
pub(crate) fn comparable(text: &str) -> String {
    let normalised = crpo_sdk::rules::normalise(text);
    python_strip(python_strip(&normalised).trim_end_matches('.')).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_medqa_record() {
        let record = json!({"question": "A 45-year-old…?", "answer": "Heparin", "answer_idx": "B",
            "options": {"B": "Heparin", "A": "Aspirin", "C": "Warfarin", "D": "Alteplase"},
            "meta_info": "step1"});
        let example = parse(record.as_object().unwrap(), "medqa.jsonl:1").unwrap();
        assert_eq!(example.answer.as_deref(), Some("B"));
        assert_eq!(
            example.options.iter().map(|o| o.key.as_str()).collect::<String>(),
            "ABCD"
        );
        assert_eq!(example.metadata["meta_info"], "step1");
        // BigBio's source layout: the options as a list of key/value pairs.
        let bigbio = json!({"question": "Which?", "answer": "Heparin", "answer_idx": "B", "meta_info": "step1",
            "options": [{"key": "A", "value": "Aspirin"}, {"key": "B", "value": "Heparin"}]});
        assert!(looks_like(bigbio.as_object().unwrap()));
        let example = parse(bigbio.as_object().unwrap(), "bigbio.jsonl:1").unwrap();
        assert_eq!(example.answer.as_deref(), Some("B"));
        assert_eq!(example.options[1].text, "Heparin");
    }

    /// `Dataset.flatten()` or a Parquet export: `options.A` … columns, a null one no option.
    #[test]
    fn flattened_option_columns_are_the_options() {
        let flat = json!({"question": "Which?", "answer": "Heparin", "answer_idx": "B",
            "options.A": "Aspirin", "options.B": "Heparin", "options.E": null, "meta_info": "step1"});
        assert!(looks_like(flat.as_object().unwrap()));
        let example = parse(flat.as_object().unwrap(), "flat.jsonl:1").unwrap();
        assert_eq!(example.answer.as_deref(), Some("B"));
        let keys: String = example.options.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, "AB");
        assert!(!example.metadata.contains_key("options.A"));
    }

    /// Plugin authors build test examples with the sdk's `example_from_json`: it must read
    /// every shipped MedQA record as this reader does.
    #[test]
    fn the_sdks_test_examples_read_medqa_as_this_reader_does() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/demo/train.jsonl");
        let text = std::fs::read_to_string(path).unwrap();
        for line in text.lines().take(50) {
            let record: Value = serde_json::from_str(line).unwrap();
            let ours = parse(record.as_object().unwrap(), "example").unwrap();
            assert_eq!(crpo_sdk::testing::example_from_json(line).unwrap(), ours);
        }
    }

    #[test]
    fn names_the_bad_field() {
        let record = json!({"question": "q", "options": {"A": "x"}, "answer_idx": "E"});
        assert_eq!(
            parse(record.as_object().unwrap(), "x").unwrap_err().0,
            "answer_idx"
        );
        let record = json!({"question": "q", "options": {"A": 3}, "answer_idx": "A"});
        assert_eq!(
            parse(record.as_object().unwrap(), "x").unwrap_err().0,
            "options.A"
        );
    }

    /// An export that moved `answer_idx` away from `answer`'s option gives another gold.
    #[test]
    fn an_answer_text_unlike_answer_idx_s_option_is_named() {
        let options = json!({"A": "Aspirin", "B": "Heparin", "C": "Warfarin"});
        let with = |answer: &str| {
            let record =
                json!({"question": "Best drug?", "answer": answer, "options": options, "answer_idx": "B"});
            parse(record.as_object().unwrap(), "x").map_err(|e| e.0)
        };
        assert_eq!(with("Warfarin").unwrap_err(), "answer");
        assert_eq!(with("Clopidogrel").unwrap_err(), "answer");
        assert_eq!(with(" heparin. ").unwrap().answer.as_deref(), Some("B"));
    }
}
