//! `jsonl`: any JSONL (or JSON array) of questions, with the field names given as options.
//!
//! ```toml
//! [data]
//! dataset = "jsonl"
//! path = "my_questions.jsonl"
//! options = { question = "prompt", options = "choices", answer = "label", answer_format = "index0" }
//! ```
//!
//! - `question` (default `"question"`): the question text.
//! - `options` (default `"options"`, optional in records): an object of key → text, or a list
//!   of texts (keys A, B, C, … in order). Without it, the answer is a free label.
//! - `answer` (default `"answer"`): the gold answer, which a record may leave out (TRL's
//!   prompt-only data, scored by objectives that need no gold); `answer_format` says how to read it:
//!   `key` (default: an option key or label as is), `index0` / `index1` (a 0- or 1-based
//!   position in the options), `text` (the text of one of the options).
//! - `id`, `reference_completion` (optional): fields holding the record id and a reference
//!   completion for the supervised cold start.

use crate::records::{
    integer_value, metadata_without, optional_options, question_field, read_records, record_id,
};
use crate::FieldError;
use crpo_sdk::{
    parse_options, AnswerOption, DatasetPlugin, DatasetRead, DatasetSource, Example, PluginError, PluginInfo,
    Prompt,
};
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Deserialize, Clone, Copy, PartialEq, Debug, Default)]
#[serde(rename_all = "snake_case")]
pub enum AnswerFormat {
    #[default]
    Key,
    Index0,
    Index1,
    Text,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    #[serde(default = "default_question")]
    pub question: String,
    #[serde(default = "default_options")]
    pub options: String,
    #[serde(default = "default_answer")]
    pub answer: String,
    #[serde(default)]
    pub answer_format: AnswerFormat,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub reference_completion: Option<String>,
}

fn default_question() -> String {
    "question".into()
}
fn default_options() -> String {
    "options".into()
}
fn default_answer() -> String {
    "answer".into()
}

impl FieldMapping {
    pub fn parse(&self, record: &Map<String, Value>, id: &str) -> Result<Example, FieldError> {
        let question = question_field(record, &self.question)?;
        let options = optional_options(record, &self.options)?;
        let answer = self.answer(record, &options)?;
        let id = record_id(record, self.id.as_deref(), id);
        // A record without one (absent or null) has none, as in MedQA: it is still a question
        // for RL, and only the supervised cold start passes it over.
        let reference_completion = match self.reference_completion.as_deref().map(|f| (f, record.get(f))) {
            None | Some((_, None | Some(Value::Null))) => None,
            Some((_, Some(Value::String(text)))) => Some(text.clone()),
            Some((field, Some(_))) => return Err((field.to_string(), "not a string".to_string())),
        };
        // The record's other columns stay, the answer's raw value too (a reward function
        // written for TRL is passed its dataset's columns); the options are the example's.
        let mut consumed = vec![self.question.as_str(), self.options.as_str()];
        consumed.extend(self.reference_completion.as_deref());
        Ok(Example {
            id,
            prompt: Prompt::Text(question.to_string()),
            answer,
            options,
            reference_completion,
            metadata: metadata_without(record, &consumed),
        })
    }

    /// The gold answer's key (or free label); none when the record has no such field (or null).
    fn answer(
        &self,
        record: &Map<String, Value>,
        options: &[AnswerOption],
    ) -> Result<Option<String>, FieldError> {
        let field = self.answer.as_str();
        let Some(raw) = record.get(field).filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let fail = |message: String| (field.to_string(), message);
        // A record without options has a free-text answer whatever the format says of option
        // answers (a file may mix both kinds).
        let format = match options.is_empty() {
            true => AnswerFormat::Key,
            false => self.answer_format,
        };
        let key = match format {
            AnswerFormat::Key => match raw {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(fail("not a string".into())),
            },
            AnswerFormat::Index0 | AnswerFormat::Index1 => {
                let base = if format == AnswerFormat::Index1 { 1 } else { 0 };
                let index = integer_value(raw).ok_or_else(|| fail(format!("{raw} is not an integer")))?;
                let option = index
                    .checked_sub(base)
                    .and_then(|i| usize::try_from(i).ok())
                    .and_then(|i| options.get(i))
                    .ok_or_else(|| fail(format!("{index} is not a {base}-based option position")))?;
                option.key.clone()
            }
            AnswerFormat::Text => {
                let text = raw.as_str().ok_or_else(|| fail("not a string".into()))?;
                // As the medqa reader compares them: case, spacing and a final full stop aside.
                let wanted = crate::medqa::comparable(text);
                let matching: Vec<&str> = options
                    .iter()
                    .filter(|o| crate::medqa::comparable(&o.text) == wanted)
                    .map(|o| o.key.as_str())
                    .collect();
                match matching.as_slice() {
                    [key] => key.to_string(),
                    [] => return Err(fail(format!("`{text}` is not the text of an option"))),
                    keys => {
                        return Err(fail(format!(
                            "`{text}` is the text of options {}: the gold is ambiguous",
                            keys.join(" and ")
                        )))
                    }
                }
            }
        };
        if !options.is_empty() && !options.iter().any(|o| o.key == key) {
            // An option's position given as the answer: the format says how to read it.
            let hint = match raw {
                Value::Number(_) => " (an option's position? set answer_format = \"index0\" or \"index1\")",
                _ => "",
            };
            return Err(fail(format!("`{key}` is not one of the option keys{hint}")));
        }
        Ok(Some(key))
    }
}

pub struct GenericJsonlReader;

impl DatasetPlugin for GenericJsonlReader {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            "jsonl",
            env!("CARGO_PKG_VERSION"),
            "Any JSONL of questions; field names and answer format as options",
        )
    }

    fn read(&self, source: &DatasetSource) -> Result<DatasetRead, PluginError> {
        let mapping: FieldMapping = parse_options(&source.options)?;
        let read = read_records(&source.path, |record, id| mapping.parse(record, id))?;
        // Free-text rows read under any format; but a format for option answers over a file
        // where no row has options is a missing `options` mapping, not free text.
        let answered = read.examples.iter().any(|e| e.answer.is_some());
        if mapping.answer_format != AnswerFormat::Key
            && answered
            && read.examples.iter().all(|e| e.options.is_empty())
        {
            return Err(PluginError::InvalidOption {
                option: "answer_format".into(),
                message: format!(
                    "\"{}\" reads answers as options, but no record of {} has options under `{}`: map the field that holds them (options = \"choices\"), or leave answer_format out for free-text answers",
                    format!("{:?}", mapping.answer_format).to_lowercase(),
                    source.path.display(),
                    mapping.options
                ),
            });
        }
        Ok(read)
    }
}

pub static GENERIC_JSONL: GenericJsonlReader = GenericJsonlReader;
crpo_sdk::register_dataset!(GENERIC_JSONL);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(options: Value) -> FieldMapping {
        parse_options(&options).unwrap()
    }

    #[test]
    fn maps_fields_and_reads_each_answer_format() {
        let record =
            json!({"q": "Which?", "choices": ["aspirin", "heparin"], "gold": 1, "uid": 7, "why": "ref"});
        let m = mapping(
            json!({"question": "q", "options": "choices", "answer": "gold", "answer_format": "index0",
                               "id": "uid", "reference_completion": "why"}),
        );
        let example = m.parse(record.as_object().unwrap(), "f:1").unwrap();
        assert_eq!((example.id.as_str(), example.answer.as_deref()), ("7", Some("B")));
        assert_eq!(example.reference_completion.as_deref(), Some("ref"));
        let one_based = mapping(
            json!({"question": "q", "options": "choices", "answer": "gold", "answer_format": "index1"}),
        );
        assert_eq!(
            one_based
                .parse(record.as_object().unwrap(), "f:1")
                .unwrap()
                .answer
                .as_deref(),
            Some("A")
        );
        let by_text =
            json!({"question": "Which?", "options": {"A": "aspirin", "B": "heparin"}, "answer": "heparin"});
        let text = mapping(json!({"answer_format": "text"}));
        assert_eq!(
            text.parse(by_text.as_object().unwrap(), "f:1")
                .unwrap()
                .answer
                .as_deref(),
            Some("B")
        );
        // As the medqa reader compares: case, spacing and a final full stop aside.
        let loose = json!({"question": "Which?", "options": ["Aspirin", "Heparin "], "answer": " heparin."});
        let parsed = text.parse(loose.as_object().unwrap(), "f:2").unwrap();
        assert_eq!(parsed.answer.as_deref(), Some("B"));
        let twice =
            json!({"question": "Which?", "options": ["Aspirin", "Heparin", "aspirin"], "answer": "Aspirin"});
        let (field, message) = text.parse(twice.as_object().unwrap(), "f:3").unwrap_err();
        assert!(
            field == "answer" && message.contains("options A and C"),
            "{message}"
        );
    }

    /// Options that could never be answered by letter, or gold answers no option holds, are
    /// named; integral floats (a pandas column with a gap) read as integers; a reference
    /// completion is optional per record.
    #[test]
    fn options_and_answers_that_cannot_be_scored_are_named() {
        let m = mapping(json!({"answer_format": "index1", "reference_completion": "why"}));
        let parse = |record: Value| m.parse(record.as_object().unwrap(), "f:1");
        let field = |record: Value| parse(record).unwrap_err().0;
        let many: Vec<String> = (0..30).map(|i| format!("option {i}")).collect();
        assert_eq!(
            field(json!({"question": "Q?", "options": many, "answer": 27})),
            "options"
        );
        let numbered = json!({"question": "Q?", "options": {"1": "x", "10": "y"}, "answer": 2});
        assert_eq!(field(numbered), "options.1");
        assert_eq!(
            field(json!({"question": "Q?", "options": {"a": "x"}, "answer": 1})),
            "options.a"
        );
        assert_eq!(
            field(json!({"question": "Q?", "options": [], "answer": 1})),
            "options"
        );
        assert_eq!(
            field(json!({"question": "Q?", "options": {"A": null}, "answer": 1})),
            "options"
        );
        assert_eq!(
            field(json!({"question": "Q?", "options": ["x", " "], "answer": 1})),
            "options[1]"
        );
        let minimum = json!({"question": "Q?", "options": ["x"], "answer": i64::MIN});
        assert_eq!(field(minimum), "answer");
        let float = parse(json!({"question": "Q?", "options": ["x", "y"], "answer": 2.0})).unwrap();
        assert_eq!(float.answer.as_deref(), Some("B"));
        assert_eq!(float.reference_completion, None, "no `why`: no reference");
        assert_eq!(
            field(json!({"question": "Q?", "options": ["x"], "answer": 1, "why": 3})),
            "why"
        );
    }

    #[test]
    fn names_the_bad_field_and_option() {
        let m = mapping(json!({}));
        let record = json!({"question": "Which?", "options": {"A": "x"}, "answer": "C"});
        assert_eq!(
            m.parse(record.as_object().unwrap(), "f:1").unwrap_err().0,
            "answer"
        );
        let err = parse_options::<FieldMapping>(&json!({"questoin": "q"}))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("questoin"), "{err}");
        let free = json!({"question": "Is it?", "answer": "yes"});
        assert_eq!(
            m.parse(free.as_object().unwrap(), "f:1")
                .unwrap()
                .answer
                .as_deref(),
            Some("yes")
        );
        // A format for option answers over a file where no row has options is a missing
        // options mapping: refused, not read as free text.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        std::fs::write(
            &path,
            "{\"question\": \"Which?\", \"choices\": [\"x\", \"y\"], \"answer\": 1}\n",
        )
        .unwrap();
        let source = |options: Value| DatasetSource {
            path: path.clone(),
            options,
        };
        let err = GENERIC_JSONL
            .read(&source(json!({"answer_format": "index0"})))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no record of") && err.contains("options = \"choices\""),
            "{err}"
        );
        let mapped = GENERIC_JSONL
            .read(&source(json!({"answer_format": "index0", "options": "choices"})))
            .unwrap();
        assert_eq!(mapped.examples[0].answer.as_deref(), Some("B"));
        // Free-text rows beside option rows, whatever answer_format says of the latter.
        for format in ["index0", "index1", "text"] {
            let mixed = mapping(json!({"answer_format": format}));
            let free = json!({"question": "Dose?", "answer": 140});
            let parsed = mixed.parse(free.as_object().unwrap(), "f:2").unwrap();
            assert_eq!(parsed.answer.as_deref(), Some("140"), "{format}");
        }
        let position = json!({"question": "Which?", "options": ["x", "y", "z"], "answer": 2});
        let (_, why) = m.parse(position.as_object().unwrap(), "f:1").unwrap_err();
        assert!(why.contains("answer_format = \"index0\""), "{why}");
    }

    /// TRL's prompt-only form: a prompt and nothing else is a question without a gold.
    #[test]
    fn a_record_without_an_answer_has_no_gold() {
        let m = mapping(json!({"question": "prompt"}));
        for record in [
            json!({"prompt": "Summarise the note."}),
            json!({"prompt": "Summarise.", "answer": null}),
        ] {
            let example = m.parse(record.as_object().unwrap(), "f:1").unwrap();
            assert_eq!(example.answer, None);
        }
    }
}
