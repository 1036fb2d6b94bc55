//! Helpers for an objective's unit tests: an [`Example`] from a MedQA-style JSON record, and
//! one completion scored through the plugin exactly as the host scores it (options parsed by
//! `create`, the score checked as the host checks it).
//!
//! ```
//! use crpo_sdk::testing::{example_from_json, score_one};
//! use crpo_sdk::{Example, NoOptions, Score};
//!
//! fn boxed_gold(example: &Example, completion: &str, _: &NoOptions) -> f32 {
//!     let chosen = crpo_sdk::rules::chosen_letter(completion).map(String::from);
//!     if chosen == example.answer { 1.0 } else { 0.0 }
//! }
//!
//! let plugin = crpo_sdk::reward_fn!(boxed_gold, "1 for the gold letter in a box");
//! let example = example_from_json(r#"{"question": "Which drug?",
//!     "options": {"A": "Aspirin", "B": "Heparin"}, "answer_idx": "B"}"#).unwrap();
//! let options = serde_json::Value::Null;
//! assert_eq!(score_one(&plugin, &options, &example, "\\boxed{B}").unwrap(), Score::new(1.0));
//! assert_eq!(score_one(&plugin, &options, &example, "\\boxed{A}").unwrap(), Score::new(0.0));
//! ```

use crate::error::{PluginError, Result};
use crate::example::{AnswerOption, Example, Prompt};
use crate::reward::{check_scores, RewardPlugin, Score, ScoreRequest};
use serde_json::{Map, Value};

/// An example from one JSON record: MedQA's layout (`question`, `options` as an object of key
/// → text, `answer_idx` the gold key, optional `reference_completion`; every other field goes
/// to `metadata`), or crpo's own [`Example`] JSON (a record with `prompt`). The error names the
/// field. The built-in `medqa` reader reads MedQA records the same way.
pub fn example_from_json(record: &str) -> Result<Example> {
    let value: Value =
        serde_json::from_str(record).map_err(|e| PluginError::failed(format!("not a JSON record: {e}")))?;
    let Value::Object(record) = value else {
        return Err(PluginError::failed("not a JSON object"));
    };
    if record.contains_key("prompt") {
        return serde_json::from_value(Value::Object(record))
            .map_err(|e| PluginError::failed(format!("not an example: {e}")));
    }
    medqa_example(&record, "example")
}

/// A MedQA-layout record as an example with this id; the error names the bad field.
fn medqa_example(record: &Map<String, Value>, id: &str) -> Result<Example> {
    let field = |name: &str, message: &str| PluginError::failed(format!("field `{name}`: {message}"));
    let text = |name: &str| match record.get(name) {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(field(name, "not a string")),
        None => Err(field(name, "missing")),
    };
    let question = text("question")?;
    let Some(Value::Object(options)) = record.get("options") else {
        return Err(field("options", "missing or not an object of key → text"));
    };
    let options = options
        .iter()
        .map(|(key, text)| match text {
            Value::String(text) => Ok(AnswerOption {
                key: key.clone(),
                text: text.clone(),
            }),
            _ => Err(field(&format!("options.{key}"), "not a string")),
        })
        .collect::<Result<Vec<_>>>()?;
    let answer = text("answer_idx")?;
    if !options.iter().any(|o| o.key == answer) {
        return Err(field(
            "answer_idx",
            &format!("`{answer}` is not one of the options"),
        ));
    }
    let reference_completion = match record.get("reference_completion") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => return Err(field("reference_completion", "not a string")),
    };
    let metadata = record
        .iter()
        .filter(|(k, _)| !["question", "options", "reference_completion"].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Example {
        id: id.to_string(),
        prompt: Prompt::Text(question),
        answer: Some(answer),
        options,
        reference_completion,
        metadata,
    })
}

/// Scores one completion of `example` with a fresh objective of `plugin` made from `options`
/// (JSON, `Value::Null` for none), checked as the host checks every score (one, finite).
pub fn score_one(
    plugin: &dyn RewardPlugin,
    options: &Value,
    example: &Example,
    completion: &str,
) -> Result<Score> {
    let objective = plugin.create(options)?;
    let prompt = example.prompt.question().to_string();
    let completions = [completion];
    let mut scores = objective.score_group(&ScoreRequest::new(example, &prompt, &completions))?;
    check_scores(&scores, 1).map_err(PluginError::Failed)?;
    Ok(scores.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_medqa_record_naming_bad_fields() {
        let example = example_from_json(
            r#"{"question": "q?", "options": {"A": "x", "B": "y"}, "answer_idx": "B", "answer": "y", "meta_info": "step1"}"#,
        )
        .unwrap();
        assert_eq!(example.answer.as_deref(), Some("B"));
        assert_eq!(example.option_text("A"), Some("x"));
        assert_eq!(example.metadata["answer"], "y");
        let bad = |json: &str| example_from_json(json).unwrap_err().to_string();
        assert!(
            bad(r#"{"question": "q", "options": {"A": "x"}, "answer_idx": "C"}"#).contains("`answer_idx`")
        );
        assert!(bad(r#"{"question": "q", "options": {"A": 1}, "answer_idx": "A"}"#).contains("`options.A`"));
        assert!(bad(r#"{"options": {"A": "x"}, "answer_idx": "A"}"#).contains("`question`"));
        assert!(bad("[1]").contains("not a JSON object"));
    }

    #[test]
    fn reads_crpos_own_example_json() {
        let example =
            example_from_json(r#"{"id": "q1", "prompt": {"text": "Why?"}, "answer": "yes"}"#).unwrap();
        assert_eq!((example.id.as_str(), example.prompt.question()), ("q1", "Why?"));
    }
}
