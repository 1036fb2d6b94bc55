//! [`PluginError`] across the boundary, with its kind and fields, so that "option `x`: …" or a
//! record's file and line reach the host as they left the plugin (since sdk 1.4; earlier
//! entry points return the error's text).

use crate::error::{PluginError, RecordError};
use abi_stable::std_types::RString;
use abi_stable::StableAbi;

/// Which [`PluginError`] variant an [`FfiPluginError`] carries.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfiErrorKind {
    InvalidOption,
    MalformedRecord,
    Failed,
}

/// A [`PluginError`] as it crosses: `field` is the option's name (InvalidOption) or the
/// record's field (MalformedRecord); `file` and `line` locate a malformed record.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct FfiPluginError {
    pub kind: FfiErrorKind,
    pub field: RString,
    pub message: RString,
    pub file: RString,
    pub line: u64,
}

impl FfiPluginError {
    /// A failure known only by its text (what entry points before sdk 1.4 return).
    pub fn failed(message: impl Into<RString>) -> Self {
        FfiPluginError {
            kind: FfiErrorKind::Failed,
            field: RString::new(),
            message: message.into(),
            file: RString::new(),
            line: 0,
        }
    }
}

impl From<PluginError> for FfiPluginError {
    fn from(error: PluginError) -> Self {
        match error {
            PluginError::InvalidOption { option, message } => FfiPluginError {
                kind: FfiErrorKind::InvalidOption,
                field: option.into(),
                message: message.into(),
                file: RString::new(),
                line: 0,
            },
            PluginError::MalformedRecord(record) => FfiPluginError {
                kind: FfiErrorKind::MalformedRecord,
                field: record.field.into(),
                message: record.message.into(),
                file: record.file.into(),
                line: record.line as u64,
            },
            PluginError::Failed(message) => FfiPluginError::failed(message),
        }
    }
}

impl From<FfiPluginError> for PluginError {
    fn from(error: FfiPluginError) -> Self {
        match error.kind {
            FfiErrorKind::InvalidOption => PluginError::InvalidOption {
                option: error.field.into(),
                message: error.message.into(),
            },
            FfiErrorKind::MalformedRecord => PluginError::MalformedRecord(RecordError {
                file: error.file.into(),
                line: error.line as usize,
                field: error.field.into(),
                message: error.message.into(),
            }),
            FfiErrorKind::Failed => PluginError::Failed(error.message.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_crosses_with_its_fields() {
        let errors = [
            PluginError::InvalidOption {
                option: "budget".into(),
                message: "must be positive".into(),
            },
            PluginError::MalformedRecord(RecordError {
                file: "d.jsonl".into(),
                line: 7,
                field: "answer".into(),
                message: "missing".into(),
            }),
            PluginError::failed("disk on fire"),
        ];
        for error in errors {
            let text = error.to_string();
            let back = PluginError::from(FfiPluginError::from(error.clone()));
            assert_eq!(back, error);
            assert_eq!(back.to_string(), text);
        }
        assert_eq!(
            PluginError::from(FfiPluginError::from(PluginError::InvalidOption {
                option: "x".into(),
                message: "bad".into()
            }))
            .to_string(),
            "option `x`: bad"
        );
    }
}
