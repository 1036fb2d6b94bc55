//! TensorBoard event files, so `tensorboard --logdir RUN_DIR` shows a run: every number of a
//! metrics.jsonl record as a scalar (nested keys joined by `/`), sampled completions as text.
//!
//! The format, from TensorFlow's spec: a file of TFRecords (u64 length, masked crc32c of the
//! length, the bytes, masked crc32c of the bytes), each an `Event` protobuf; the first holds
//! the file version. The messages below are the subset of `event.proto` / `summary.proto` a
//! scalar and a text summary need, with their field numbers.

use anyhow::Context;
use prost::Message;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "EventContent", tags = "3, 5, 7")]
    pub content: Option<EventContent>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum EventContent {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
    #[prost(message, tag = "7")]
    SessionLog(SessionLog),
}

#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
    #[prost(message, optional, tag = "8")]
    pub tensor: Option<TensorProto>,
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PluginData {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
}

/// A string tensor (`dtype` 7 is `DT_STRING`; no shape is a scalar).
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `SessionLog` with status START at step S tells TensorBoard to drop what an earlier file
/// recorded at steps ≥ S: a resumed run's steps replace the killed run's.
#[derive(Clone, PartialEq, Message)]
pub struct SessionLog {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

const DT_STRING: i32 = 7;
const SESSION_START: i32 = 1;

/// The masked CRC-32C TFRecord frames carry.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord holding `data`.
fn frame(data: &[u8]) -> Vec<u8> {
    let length = (data.len() as u64).to_le_bytes();
    let mut record = Vec::with_capacity(data.len() + 16);
    record.extend_from_slice(&length);
    record.extend_from_slice(&masked_crc(&length).to_le_bytes());
    record.extend_from_slice(data);
    record.extend_from_slice(&masked_crc(data).to_le_bytes());
    record
}

/// An event file being written; each record is flushed as it is written, so a run that is
/// still going (or was killed) can be watched.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// A new event file in `dir`; `resumed_at` (the first step this process runs) makes
    /// TensorBoard drop an earlier file's records from that step on.
    pub fn create(dir: &Path, resumed_at: Option<usize>) -> anyhow::Result<Self> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // TensorBoard reads a directory's files in name order and never goes back: a resumed
        // run's file must sort after the earlier ones, even within the same second.
        let seconds = now.max(latest_file_seconds(dir).map_or(0, |s| s + 1));
        let path = dir.join(format!(
            "events.out.tfevents.{seconds:010}.{}.{}",
            hostname(),
            std::process::id()
        ));
        let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut writer = EventWriter {
            path,
            out: BufWriter::new(file),
        };
        writer.write(0, EventContent::FileVersion("brain.Event:2".into()))?;
        // Every file starts a session, a fresh run's too: TensorBoard's server reader ignores
        // a run's first START, so a resumed file's must never be the first (its step 3 would
        // show twice). A fresh run's START purges nothing: no file precedes it.
        writer.write(
            resumed_at.unwrap_or(0) as i64,
            EventContent::SessionLog(SessionLog {
                status: SESSION_START,
            }),
        )?;
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, step: i64, content: EventContent) -> anyhow::Result<()> {
        let wall_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let event = Event {
            wall_time,
            step,
            content: Some(content),
        };
        self.out
            .write_all(&frame(&event.encode_to_vec()))
            .and_then(|()| self.out.flush())
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Scalars of one step, by tag.
    pub fn scalars(&mut self, step: usize, values: &[(String, f64)]) -> anyhow::Result<()> {
        let value = values
            .iter()
            .map(|(tag, value)| SummaryValue {
                tag: tag.clone(),
                simple_value: Some(*value as f32),
                ..SummaryValue::default()
            })
            .collect();
        self.write(step as i64, EventContent::Summary(Summary { value }))
    }

    /// A text (markdown) summary, shown in TensorBoard's Text tab.
    pub fn text(&mut self, step: usize, tag: &str, text: &str) -> anyhow::Result<()> {
        let value = SummaryValue {
            tag: tag.to_string(),
            tensor: Some(TensorProto {
                dtype: DT_STRING,
                string_val: vec![text.as_bytes().to_vec()],
            }),
            metadata: Some(SummaryMetadata {
                plugin_data: Some(PluginData {
                    plugin_name: "text".into(),
                }),
            }),
            ..SummaryValue::default()
        };
        self.write(step as i64, EventContent::Summary(Summary { value: vec![value] }))
    }
}

/// The largest timestamp in the names of `dir`'s event files.
fn latest_file_seconds(dir: &Path) -> Option<u64> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().to_string_lossy().to_string();
            name.strip_prefix("events.out.tfevents.")?
                .split('.')
                .next()?
                .parse()
                .ok()
        })
        .max()
}

fn hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let ok = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0;
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(0);
    if ok && end > 0 {
        String::from_utf8_lossy(&buffer[..end]).to_string()
    } else {
        "localhost".into()
    }
}

/// Every number of a JSON record as `(tag, value)`, nested keys joined by `/` under `prefix`
/// (`objectives.accuracy.mean` → `train/objectives/accuracy/mean`); `step` itself is left out.
pub fn scalars_of(prefix: &str, record: &serde_json::Value) -> Vec<(String, f64)> {
    super::metrics::flatten(record, "/")
        .into_iter()
        .filter(|(key, _)| key != "step")
        .filter_map(|(key, value)| {
            let number = match value {
                serde_json::Value::Number(n) => n.as_f64(),
                serde_json::Value::Bool(b) => Some(f64::from(u8::from(b))),
                _ => None,
            };
            number.map(|v| (format!("{prefix}/{key}"), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crc_is_tensorflows_masked_crc32c() {
        // CRC-32C of "123456789" is 0xe3069283 (the standard check value).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        // The mask of TensorFlow's crc32c.h, worked by hand: 0xe3069283 rotated right by 15
        // bits is 0x2507_c60d; plus 0xa282ead8 is 0xc78a_b0e5.
        assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
        let record = frame(b"abc");
        assert_eq!(&record[..8], &3u64.to_le_bytes());
        assert_eq!(record.len(), 8 + 4 + 3 + 4);
    }

    #[test]
    fn records_flatten_to_slash_separated_tags() {
        let record = serde_json::json!({"step": 3, "loss": 0.5, "objectives": {"accuracy": {"mean": 0.25}}, "skipped": true, "name": "x"});
        let mut scalars = scalars_of("train", &record);
        scalars.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            scalars,
            vec![
                ("train/loss".to_string(), 0.5),
                ("train/objectives/accuracy/mean".to_string(), 0.25),
                ("train/skipped".to_string(), 1.0),
            ]
        );
    }
}
