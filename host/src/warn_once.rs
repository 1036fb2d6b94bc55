//! Warnings said once per process for each thing they are about: a model directory without a
//! chat template, a checkpoint kept for the user's files, an objective that runs long. Said
//! at every occurrence, they repeated every step.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// Logs `message()` as a warning the first time `key` is seen.
pub fn warn_once(key: &str, message: impl FnOnce() -> String) {
    static SAID: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let first = SAID
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(key.to_string());
    if first {
        tracing::warn!("{}", message());
    }
}
