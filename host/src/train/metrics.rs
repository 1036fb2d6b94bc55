//! Per-step records: `metrics.jsonl` (one JSON object per step) and `samples.jsonl`
//! (completions with each objective's score). On resume, records of steps after the
//! checkpoint are dropped so the files read as one uninterrupted run.

use crate::memory_stats::GpuMemory;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const METRICS_FILE: &str = "metrics.jsonl";
pub const SAMPLES_FILE: &str = "samples.jsonl";

pub struct JsonlLog {
    path: PathBuf,
}

impl JsonlLog {
    /// Opens `run_dir/name`; `keep_through` = Some(step) drops records with a later `step`,
    /// None starts the file afresh. Only those records go, and a cut last line (a record the
    /// kill interrupted): any other line, one that is no step's record, is kept as it was,
    /// with a warning (it was deleted in silence).
    pub fn open(run_dir: &Path, name: &str, keep_through: Option<usize>) -> anyhow::Result<Self> {
        let path = run_dir.join(name);
        let kept = match (keep_through, path.exists()) {
            (Some(step), true) => {
                let bytes =
                    std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
                let (kept, odd) = records_through(&bytes, step);
                if !odd.is_empty() {
                    let lines: Vec<String> = odd.iter().take(5).map(usize::to_string).collect();
                    tracing::warn!(
                        "{}: kept {} line(s) that are no step's record as they were (line {}{})",
                        path.display(),
                        odd.len(),
                        lines.join(", "),
                        if odd.len() > 5 { ", …" } else { "" }
                    );
                }
                kept
            }
            _ => Vec::new(),
        };
        crate::atomic_file::write(&path, kept)?;
        Ok(JsonlLog { path })
    }

    pub fn append(&self, record: &Value) -> anyhow::Result<()> {
        let mut file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot append to {}", self.path.display()))?;
        // One write of the whole line: a reader of a run still going (`report`, a tail) never
        // sees a line's first pieces without the rest for longer than the kernel takes.
        let line = format!("{record}\n");
        file.write_all(line.as_bytes())
            .with_context(|| format!("cannot append to {}", self.path.display()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The lines of a JSONL log to keep on a resume to `step`: every line but the records of
/// later steps and a cut last line (no newline, no JSON). Returns them, and the 1-based
/// numbers of the kept lines that are no step's record.
fn records_through(bytes: &[u8], step: usize) -> (Vec<u8>, Vec<usize>) {
    let (mut kept, mut odd) = (Vec::with_capacity(bytes.len()), Vec::new());
    let mut lines = bytes.split_inclusive(|&b| b == b'\n').enumerate().peekable();
    while let Some((index, line)) = lines.next() {
        let ended = line.ends_with(b"\n");
        let record = serde_json::from_slice::<Value>(line).ok();
        match record
            .as_ref()
            .and_then(|r| r.get("step"))
            .and_then(Value::as_u64)
        {
            Some(recorded) if recorded as usize > step => continue,
            Some(_) => {}
            // A record the kill cut short.
            None if !ended && lines.peek().is_none() => continue,
            None if line.iter().all(u8::is_ascii_whitespace) => {}
            None => odd.push(index + 1),
        }
        kept.extend_from_slice(line);
        if !ended {
            kept.push(b'\n');
        }
    }
    (kept, odd)
}

/// A JSON value's leaves by path, keys joined by `separator`: `{"a": {"b": 1}}` → `{"a.b": 1}`
/// with ".". Arrays and empty objects are leaves.
pub fn flatten(value: &Value, separator: &str) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, value: &Value, separator: &str, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(map) if !map.is_empty() || prefix.is_empty() => {
                for (key, inner) in map {
                    let name = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}{separator}{key}")
                    };
                    walk(&name, inner, separator, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, separator, &mut out);
    out
}

/// The keys of a step's record that measure the machine rather than the run (time, speed,
/// memory): two identical runs differ only in them.
pub const MACHINE_KEYS: [&str; 7] = [
    "communication_s",
    "gradient_all_reduce_s",
    "rollout_tokens_per_s",
    "train_tokens_per_s",
    "step_time_s",
    "peak_rss_bytes",
    "gpu_memory",
];

/// One step's record in metrics.jsonl (docs/config.md lists every key).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepMetrics {
    pub step: usize,
    /// Each objective's mean and std over the step's completions, and its weight.
    pub objectives: BTreeMap<String, ObjectiveStats>,
    /// Each objective's diagnostics (`objective/diagnostic`), averaged over the completions
    /// that report them.
    pub diagnostics: BTreeMap<String, f64>,
    /// The weighted total.
    pub reward: MeanStd,
    pub advantage: MeanStd,
    /// Share of groups whose totals all tie (no learning signal).
    pub frac_reward_zero_std: f64,
    pub dynamic_sampling: DynamicSampling,
    /// The per-token KL to the reference; measured only when `algorithm.beta` > 0 (TRL too
    /// leaves it out then: no reference is run) and the step trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl: Option<f64>,
    pub clip_ratio: ClipRatio,
    pub entropy: f64,
    pub loss: f64,
    pub completion_length: CompletionLength,
    pub learning_rate: f64,
    pub grad_norm: f64,
    pub optimizer_updates: i64,
    /// Completion tokens sampled (dropped groups' too) per second of the rollout.
    pub rollout_tokens_per_s: f64,
    pub train_tokens_per_s: f64,
    pub step_time_s: f64,
    pub epoch: u64,
    /// Bytes of the rollout's key/value cache.
    pub kv_cache_bytes: usize,
    /// The process's peak resident memory so far.
    #[serde(default)]
    pub peak_rss_bytes: u64,
    /// On CUDA: the allocator's bytes at the step's end and their peaks during the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory: Option<GpuMemory>,
    /// This step's update was skipped: its loss or gradients were not finite (weights and
    /// optimizer state untouched).
    #[serde(default)]
    pub nonfinite_update_skipped: bool,
    /// Steps skipped so far in the run for that reason.
    #[serde(default)]
    pub nonfinite_steps: usize,
    /// This step's prompts whose user content was cut to `algorithm.max_prompt_length`.
    #[serde(default)]
    pub prompts_truncated: usize,
    /// The held-out evaluations run after this step (every `run.eval_steps`), by decoding
    /// (`greedy`, `sampled`).
    /// Distributed runs only: seconds rank 0 spent in the step's collectives (gathering the
    /// rollouts, summing gradients and statistics), waiting for slower ranks included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communication_s: Option<f64>,
    /// Distributed runs only: of those, the seconds spent summing gradients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_all_reduce_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<BTreeMap<String, EvalPoint>>,
}

/// An evaluation during training: on the held-out set with the config's [eval] settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalPoint {
    pub questions: usize,
    /// Share of questions answered right (greedy, or the vote of the samples).
    pub accuracy: f64,
    /// The weighted total's mean.
    pub reward: f64,
    /// Each objective's mean over the completions.
    pub objectives: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct ObjectiveStats {
    pub mean: f64,
    pub std: f64,
    pub weight: f32,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
}

impl MeanStd {
    pub fn of(values: &[f32]) -> Self {
        let (mean, std) = mean_std(values);
        MeanStd { mean, std }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct DynamicSampling {
    pub groups_dropped: usize,
    pub rounds: usize,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct ClipRatio {
    pub low: f64,
    pub high: f64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct CompletionLength {
    pub mean: f64,
    pub max: f32,
    pub truncated_fraction: f64,
}

/// The mean of each named value over the lists that report it.
pub fn mean_by_name<'a>(lists: impl IntoIterator<Item = &'a [(String, f32)]>) -> BTreeMap<String, f64> {
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for (name, value) in lists.into_iter().flatten() {
        let entry = sums.entry(name.clone()).or_default();
        entry.0 += f64::from(*value);
        entry.1 += 1;
    }
    sums.into_iter()
        .map(|(name, (sum, n))| (name, positive_zero(sum / n as f64)))
        .collect()
}

/// Mean and unbiased standard deviation (Bessel's n − 1, as TRL logs `rewards/*/std` and as
/// the advantages use; 0 for fewer than two values).
pub fn mean_std(values: &[f32]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    if values.len() < 2 {
        return (positive_zero(mean), 0.0);
    }
    let var = values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (positive_zero(mean), var.sqrt())
}

/// `x`, with −0 as 0: a mean of scores of −0 (Rust's float sums start at −0) would print
/// as `-0.000` in logs, tables and TensorBoard.
fn positive_zero(x: f64) -> f64 {
    x + 0.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resuming_drops_records_after_the_checkpoint() {
        let run = tempfile::tempdir().unwrap();
        let log = JsonlLog::open(run.path(), METRICS_FILE, None).unwrap();
        for step in 1..=5 {
            log.append(&json!({"step": step})).unwrap();
        }
        JsonlLog::open(run.path(), METRICS_FILE, Some(3)).unwrap();
        let text = std::fs::read_to_string(run.path().join(METRICS_FILE)).unwrap();
        assert_eq!(text, "{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n");
    }

    /// A resume drops later steps' records and a cut last line, nothing else: a damaged line
    /// before the checkpoint, a note, a line that is not UTF-8 stay as they were.
    #[test]
    fn resuming_keeps_every_line_that_is_no_later_step() {
        let text =
            b"{\"step\":1}\n{\"step\":2, CORRUPT\nnote \xff\n\n{\"step\":3}\n{\"step\":4}\n{\"step\":5, \"cu";
        let (kept, odd) = records_through(text, 3);
        assert_eq!(
            kept,
            b"{\"step\":1}\n{\"step\":2, CORRUPT\nnote \xff\n\n{\"step\":3}\n"
        );
        assert_eq!(odd, [2, 3]);
        let (kept, odd) = records_through(b"{\"step\":1}", 3);
        assert_eq!(
            (kept.as_slice(), odd.len()),
            (&b"{\"step\":1}\n"[..], 0),
            "a whole last record without its newline"
        );
    }

    #[test]
    fn named_values_are_averaged_where_reported() {
        let a = vec![("acc/boxes".to_string(), 1.0), ("f/x".to_string(), 2.0)];
        let b = vec![("acc/boxes".to_string(), 3.0)];
        let means = mean_by_name([a.as_slice(), b.as_slice()]);
        assert_eq!(means["acc/boxes"], 2.0);
        assert_eq!(means["f/x"], 2.0);
    }

    #[test]
    fn mean_and_std() {
        assert_eq!(mean_std(&[1.0, 3.0]), (2.0, 2f64.sqrt()));
        assert_eq!(
            mean_std(&[0.0, 1.0, 1.0, 1.0]),
            (0.75, 0.5),
            "TRL's reward std of [0, 1, 1, 1]"
        );
        assert_eq!(mean_std(&[5.0]), (5.0, 0.0));
        assert_eq!(mean_std(&[]), (0.0, 0.0));
        assert!(mean_std(&[-0.0, -0.0]).0.is_sign_positive());
    }
}
