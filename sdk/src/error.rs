//! The one error type a plugin returns. The host adds the plugin's name and origin.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What went wrong inside a plugin call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PluginError {
    /// An option given to the plugin in the run config is unknown, missing or ill-typed.
    #[error("option `{option}`: {message}")]
    InvalidOption { option: String, message: String },
    /// A dataset record could not be read.
    #[error("{0}")]
    MalformedRecord(RecordError),
    /// Any other failure, in the plugin's words.
    #[error("{0}")]
    Failed(String),
}

impl PluginError {
    pub fn failed(message: impl fmt::Display) -> Self {
        PluginError::Failed(message.to_string())
    }

    /// The option `option` (a dotted key) is unusable: `message` says why.
    pub fn invalid_option(option: impl fmt::Display, message: impl fmt::Display) -> Self {
        PluginError::InvalidOption {
            option: option.to_string(),
            message: message.to_string(),
        }
    }
}

/// A record a dataset reader could not turn into an example: where it is and which field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordError {
    pub file: String,
    /// 1-based line of the record (for whole-file JSON formats, the line the record starts on).
    pub line: usize,
    pub field: String,
    pub message: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: field `{}`: {}",
            self.file, self.line, self.field, self.message
        )
    }
}

pub type Result<T, E = PluginError> = std::result::Result<T, E>;
