//! `conversational`: TRL's conversational format — each record's prompt is a list of chat
//! messages (`{"role", "content"}`), system turn included, asked as it is (the chat template
//! applies; `data.prompt_template` does not).
//!
//! ```toml
//! [data]
//! dataset = "conversational"
//! path = "train.jsonl"            # or .json, .parquet
//! options = { answer = "solution" }
//! ```
//!
//! - `messages` (default: the record's `messages`, else its `prompt`): the field holding the
//!   message list. A final `assistant` turn is the reference completion (the supervised cold
//!   start's target) and is not part of the prompt — but in `prompt` (TRL's prompt-only and
//!   prompt-completion forms) it is a prefill the completion continues, as TRL renders it;
//!   the prompt needs a `user` turn.
//! - `answer` (default `"answer"`): the gold answer, a string or a number (free text; compared
//!   by `exact_match`), or an option key when the record has options. A record without the
//!   field has no gold answer (objectives that need one fail naming the example).
//! - `options` (default `"options"`, optional): an object of key → text or a list of texts
//!   (keys A, B, …), for multiple-choice questions asked as messages.
//! - `id` (optional): the field holding the record id (default: file:line).
//!
//! Roles are `system`, `user`, `assistant` (and `tool`); anything else is malformed, named by
//! its position, e.g. `messages[1].role`.

use crate::records::{metadata_without, optional_options, read_records, record_id};
use crate::FieldError;
use crpo_sdk::{
    parse_options, ChatMessage, DatasetPlugin, DatasetRead, DatasetSource, Example, PluginError, PluginInfo,
    Prompt,
};
use serde::Deserialize;
use serde_json::{Map, Value};

const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Fields {
    #[serde(default)]
    pub messages: Option<String>,
    #[serde(default = "default_answer")]
    pub answer: String,
    #[serde(default = "default_options")]
    pub options: String,
    #[serde(default)]
    pub id: Option<String>,
}

fn default_answer() -> String {
    "answer".into()
}
fn default_options() -> String {
    "options".into()
}

impl Fields {
    pub fn parse(&self, record: &Map<String, Value>, id: &str) -> Result<Example, FieldError> {
        let field = match &self.messages {
            Some(field) => field.as_str(),
            None if record.contains_key("messages") => "messages",
            None => "prompt",
        };
        let mut messages = chat_messages(record, field)?;
        // A final assistant turn of `messages` (TRL's language-modelling form) is the answer;
        // of `prompt`, the start of one to continue (a prefill, as TRL renders it).
        let mut reference_completion = match messages.last() {
            Some(last) if last.role == "assistant" && field != "prompt" => messages.pop().map(|m| m.content),
            _ => None,
        };
        // TRL's conversational prompt-completion form: the reference is `completion`'s turn.
        let completion = (field == "prompt").then(|| record.get(COMPLETION)).flatten();
        if let Some(Value::String(text)) = completion {
            // The assistant's text alone (what `crpo-host score` reads as the completion to
            // score, beside a conversational prompt).
            reference_completion = Some(text.clone());
        } else if let Some(value) = completion.filter(|v| !v.is_null()) {
            let turns = chat_messages(record, COMPLETION)?;
            match turns.as_slice() {
                [turn] if turn.role == "assistant" => reference_completion = Some(turn.content.clone()),
                _ => {
                    return Err((
                        COMPLETION.into(),
                        format!("{value} is not one assistant turn (TRL's prompt-completion form)"),
                    ))
                }
            }
        }
        if !messages.iter().any(|m| m.role == "user") {
            return Err((field.to_string(), "no `user` turn to answer".into()));
        }
        if messages
            .iter()
            .all(|m| m.role != "user" || m.content.trim().is_empty())
        {
            return Err((
                field.to_string(),
                "every `user` turn is empty: there is no question".into(),
            ));
        }
        let options = optional_options(record, &self.options)?;
        let answer = match record.get(&self.answer) {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Number(number)) => Some(number.to_string()),
            Some(_) => return Err((self.answer.clone(), "not a string or a number".into())),
        };
        if let Some(key) = answer.as_ref().filter(|_| !options.is_empty()) {
            if !options.iter().any(|o| &o.key == key) {
                return Err((
                    self.answer.clone(),
                    format!("`{key}` is not one of the option keys"),
                ));
            }
        }
        let id = record_id(record, self.id.as_deref(), id);
        // The other columns stay, the answer's raw value too (a reward function written for
        // TRL is passed its dataset's columns); the options are the example's.
        let mut consumed = vec![field, self.options.as_str()];
        if completion.is_some() {
            consumed.push(COMPLETION);
        }
        Ok(Example {
            id,
            prompt: Prompt::Messages(messages),
            answer,
            options,
            reference_completion,
            metadata: metadata_without(record, &consumed),
        })
    }
}

const COMPLETION: &str = "completion";

/// The record's message list, each turn checked.
fn chat_messages(record: &Map<String, Value>, field: &str) -> Result<Vec<ChatMessage>, FieldError> {
    let Some(Value::Array(turns)) = record.get(field) else {
        if let (Some(Value::String(_)), "prompt") = (record.get(field), field) {
            return Err((
                field.into(),
                "a string, TRL's standard (not conversational) form: read such a file with dataset = \"jsonl\" and options = { question = \"prompt\" } (the answer's column as `answer`)".into(),
            ));
        }
        return Err((field.into(), "missing or not a list of messages".into()));
    };
    if turns.is_empty() {
        return Err((field.into(), "no messages".into()));
    }
    turns
        .iter()
        .enumerate()
        .map(|(i, turn)| {
            let at = |key: &str| format!("{field}[{i}].{key}");
            let Value::Object(turn) = turn else {
                return Err((
                    format!("{field}[{i}]"),
                    "not a {\"role\", \"content\"} object".into(),
                ));
            };
            let role = match turn.get("role") {
                Some(Value::String(role)) if ROLES.contains(&role.as_str()) => role.clone(),
                Some(Value::String(role)) => {
                    return Err((at("role"), format!("`{role}` is not one of {}", ROLES.join(", "))))
                }
                _ => return Err((at("role"), "missing or not a string".into())),
            };
            let content = match turn.get("content") {
                Some(Value::String(content)) => content.clone(),
                Some(Value::Array(parts)) => text_parts(parts).map_err(|message| (at("content"), message))?,
                _ => {
                    return Err((
                        at("content"),
                        "missing, or neither a string nor a list of parts".into(),
                    ))
                }
            };
            Ok(ChatMessage { role, content })
        })
        .collect()
}

/// Content given as OpenAI-style parts (`[{"type": "text", "text": "…"}]`, as multimodal chat
/// datasets write even text): the text parts one after another, as a chat template that
/// takes parts renders them. Other parts (an image) are refused: the policy reads text.
fn text_parts(parts: &[Value]) -> Result<String, String> {
    let mut text = String::new();
    for (i, part) in parts.iter().enumerate() {
        match (part.get("type").and_then(Value::as_str), part.get("text")) {
            (Some("text"), Some(Value::String(piece))) => text.push_str(piece),
            (Some("text"), _) => return Err(format!("part {i} is a text part without a `text` string")),
            (Some(other), _) => {
                return Err(format!(
                    "part {i} is `{other}`: only text parts are read (the policy reads text)"
                ))
            }
            (None, _) => return Err(format!("part {i} is not a {{\"type\", …}} object")),
        }
    }
    Ok(text)
}

pub struct ConversationalReader;

impl DatasetPlugin for ConversationalReader {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            "conversational",
            env!("CARGO_PKG_VERSION"),
            "TRL's conversational format: a `messages` (or `prompt`) list per record, system turn kept; free-text or option answers",
        )
    }

    fn read(&self, source: &DatasetSource) -> Result<DatasetRead, PluginError> {
        let fields: Fields = parse_options(&source.options)?;
        read_records(&source.path, |record, id| fields.parse(record, id))
    }
}

pub static CONVERSATIONAL: ConversationalReader = ConversationalReader;
crpo_sdk::register_dataset!(CONVERSATIONAL);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(record: Value, options: Value) -> Result<Example, FieldError> {
        let fields: Fields = parse_options(&options).unwrap();
        fields.parse(record.as_object().unwrap(), "f.jsonl:1")
    }

    #[test]
    fn keeps_the_system_turn_and_takes_a_final_assistant_turn_as_the_reference() {
        let record = json!({"messages": [
            {"role": "system", "content": "You are a clinician."},
            {"role": "user", "content": "Dose of X?"},
            {"role": "assistant", "content": "\\boxed{5}"}],
            "answer": 5, "source": "notes"});
        let example = parse(record, json!(null)).unwrap();
        let Prompt::Messages(messages) = &example.prompt else {
            panic!("not messages")
        };
        assert_eq!(
            messages.iter().map(|m| m.role.as_str()).collect::<Vec<_>>(),
            ["system", "user"]
        );
        assert_eq!(example.reference_completion.as_deref(), Some("\\boxed{5}"));
        assert_eq!(example.answer.as_deref(), Some("5"));
        assert_eq!(example.metadata["source"], "notes");
        assert!(!example.metadata.contains_key("messages"));
    }

    /// TRL continues a `prompt` that ends with the assistant's turn (a prefill); only a
    /// `messages` list's final turn is the answer.
    #[test]
    fn a_final_assistant_turn_of_a_prompt_is_a_prefill() {
        let prompt =
            json!([{"role": "user", "content": "Dose?"}, {"role": "assistant", "content": "<think>"}]);
        let example = parse(json!({"prompt": prompt}), json!(null)).unwrap();
        let Prompt::Messages(messages) = &example.prompt else {
            panic!("not messages")
        };
        assert_eq!(messages.last().unwrap().content, "<think>");
        assert_eq!(example.reference_completion, None);
        let completed = json!({"prompt": prompt, "completion": [{"role": "assistant", "content": "5 mg"}]});
        let example = parse(completed, json!(null)).unwrap();
        assert_eq!(example.reference_completion.as_deref(), Some("5 mg"));
        assert!(matches!(&example.prompt, Prompt::Messages(m) if m.len() == 2));
    }

    #[test]
    fn reads_trls_prompt_field_and_a_named_answer_field() {
        let record = json!({"prompt": [{"role": "user", "content": "Which?"}], "solution": "warfarin"});
        let example = parse(record, json!({"answer": "solution"})).unwrap();
        assert_eq!(example.prompt.question(), "Which?");
        assert_eq!(example.answer.as_deref(), Some("warfarin"));
        let mcq = json!({"messages": [{"role": "user", "content": "Which?"}], "options": ["a", "b"], "answer": "B"});
        assert_eq!(parse(mcq, json!(null)).unwrap().option_text("B"), Some("b"));
    }

    /// TRL's conversational prompt-completion records: the completion's turn is the reference.
    #[test]
    fn reads_trls_completion_turn_as_the_reference() {
        let record = json!({"prompt": [{"role": "user", "content": "Which?"}],
            "completion": [{"role": "assistant", "content": "\\boxed{B}"}], "answer": "warfarin"});
        let example = parse(record, json!(null)).unwrap();
        assert_eq!(example.reference_completion.as_deref(), Some("\\boxed{B}"));
        assert!(!example.metadata.contains_key("completion"));
        let two = json!({"prompt": [{"role": "user", "content": "Which?"}],
            "completion": [{"role": "user", "content": "x"}]});
        assert_eq!(parse(two, json!(null)).unwrap_err().0, "completion");
        // The assistant's text alone, as `score` files give the output to score.
        let text = json!({"prompt": [{"role": "user", "content": "Which?"}], "completion": "\\boxed{140}"});
        let example = parse(text, json!(null)).unwrap();
        assert_eq!(example.reference_completion.as_deref(), Some("\\boxed{140}"));
    }

    /// OpenAI-style content parts, as multimodal chat datasets write text too.
    #[test]
    fn reads_text_parts_and_refuses_other_parts() {
        let record = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "Dose of X "}, {"type": "text", "text": "in mg?"}]}]});
        assert_eq!(
            parse(record, json!(null)).unwrap().prompt.question(),
            "Dose of X in mg?"
        );
        let image = json!({"messages": [{"role": "user", "content": [
            {"type": "image", "url": "x.png"}, {"type": "text", "text": "What is it?"}]}]});
        let (field, message) = parse(image, json!(null)).unwrap_err();
        assert_eq!(field, "messages[0].content");
        assert!(message.contains("`image`"), "{message}");
    }

    #[test]
    fn names_the_bad_turn() {
        let bad = |record: Value| parse(record, json!(null)).unwrap_err().0;
        assert_eq!(
            bad(json!({"messages": [{"role": "doctor", "content": "x"}]})),
            "messages[0].role"
        );
        assert_eq!(
            bad(json!({"messages": [{"role": "user"}]})),
            "messages[0].content"
        );
        assert_eq!(
            bad(json!({"messages": [{"role": "system", "content": "x"}]})),
            "messages"
        );
        assert_eq!(bad(json!({"messages": "hi"})), "messages");
        assert_eq!(
            bad(json!({"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "  "}]})),
            "messages"
        );
        assert_eq!(bad(json!({"question": "hi"})), "prompt");
        let standard = parse(json!({"prompt": "The capital of France is"}), json!(null)).unwrap_err();
        assert!(standard.1.contains("dataset = \"jsonl\""), "{}", standard.1);
        let wrong_key =
            json!({"messages": [{"role": "user", "content": "q"}], "options": ["a"], "answer": "C"});
        assert_eq!(bad(wrong_key), "answer");
    }
}
