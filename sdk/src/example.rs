//! One training or evaluation example, as every dataset yields it and every objective sees it.

use serde::{Deserialize, Serialize};

/// A chat turn. `role` is `system`, `user` or `assistant`, as in Hugging Face chat templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// What the policy is asked: plain text, or chat messages to render with the model's template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    Text(String),
    Messages(Vec<ChatMessage>),
}

impl Default for Prompt {
    fn default() -> Self {
        Prompt::Text(String::new())
    }
}

impl Prompt {
    /// The user-visible question: the text, or the last user message.
    pub fn question(&self) -> &str {
        match self {
            Prompt::Text(text) => text,
            Prompt::Messages(messages) => messages
                .iter()
                .rev()
                .find(|m| m.role == "user")
                .map_or("", |m| m.content.as_str()),
        }
    }
}

/// One answer option of a multiple-choice question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerOption {
    /// The key the model must answer with: "A", "B", … (or "yes"/"no"/"maybe").
    pub key: String,
    pub text: String,
}

/// An example with its reference fields. Objectives never see anything else of the data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// Stable identifier (the record's own id, or `file:line`).
    pub id: String,
    pub prompt: Prompt,
    /// The gold answer: an option key for multiple choice, a label otherwise.
    #[serde(default)]
    pub answer: Option<String>,
    /// Options in the order they are shown.
    #[serde(default)]
    pub options: Vec<AnswerOption>,
    /// A reference completion (for supervised cold start), when the data carries one.
    #[serde(default)]
    pub reference_completion: Option<String>,
    /// The record's other fields, for a custom objective (and a Python reward's keyword
    /// arguments): all but its question or prompt, options and reference; the gold's own
    /// column stays as the file gives it.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl Example {
    /// The reference completion a supervised fine-tuning trains on: present and not blank (a
    /// blank one would teach the model to stop at once).
    pub fn usable_reference(&self) -> Option<&str> {
        self.reference_completion
            .as_deref()
            .filter(|r| !r.trim().is_empty())
    }

    /// The text of the option with this key.
    pub fn option_text(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|o| o.key == key)
            .map(|o| o.text.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_is_the_last_user_turn() {
        let prompt = Prompt::Messages(vec![
            ChatMessage {
                role: "system".into(),
                content: "be brief".into(),
            },
            ChatMessage {
                role: "user".into(),
                content: "first".into(),
            },
            ChatMessage {
                role: "assistant".into(),
                content: "ok".into(),
            },
            ChatMessage {
                role: "user".into(),
                content: "second".into(),
            },
        ]);
        assert_eq!(prompt.question(), "second");
    }

    #[test]
    fn example_round_trips_through_json() {
        let example = Example {
            id: "q1".into(),
            prompt: Prompt::Text("Which drug?".into()),
            answer: Some("B".into()),
            options: vec![
                AnswerOption {
                    key: "A".into(),
                    text: "Aspirin".into(),
                },
                AnswerOption {
                    key: "B".into(),
                    text: "Heparin".into(),
                },
            ],
            ..Example::default()
        };
        let json = serde_json::to_string(&example).unwrap();
        assert_eq!(serde_json::from_str::<Example>(&json).unwrap(), example);
        assert_eq!(example.option_text("B"), Some("Heparin"));
    }
}
