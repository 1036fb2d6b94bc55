//! Datasets: readers that turn a file (and options) into [`Example`]s.

use crate::error::{RecordError, Result};
use crate::example::Example;
use crate::PluginInfo;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where to read and how, from the run config's dataset table.
#[derive(Debug, Clone)]
pub struct DatasetSource {
    pub path: PathBuf,
    /// The reader's own options (JSON; `null` when none).
    pub options: serde_json::Value,
}

/// What a reader found: the good examples and every record it could not read. The host
/// decides what a malformed record means: an error naming it, or (opt-in) skipped and counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetRead {
    pub examples: Vec<Example>,
    pub malformed: Vec<RecordError>,
}

/// A kind of dataset, as a library ships it.
pub trait DatasetPlugin: Send + Sync {
    fn info(&self) -> PluginInfo;
    /// Reads the whole source. An unreadable file is an `Err`; a bad record goes to
    /// [`DatasetRead::malformed`] so the host can report or skip it.
    fn read(&self, source: &DatasetSource) -> Result<DatasetRead>;
}
