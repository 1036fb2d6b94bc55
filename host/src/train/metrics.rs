//! Per-step records: `metrics.jsonl` (one JSON object per step) and `samples.jsonl`
//! (completions with each objective's score). On resume, records of steps after the
//! checkpoint are dropped so the files read as one uninterrupted run.

use anyhow::Context;
use serde_json::Value;
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
    /// None starts the file afresh.
    pub fn open(run_dir: &Path, name: &str, keep_through: Option<usize>) -> anyhow::Result<Self> {
        let path = run_dir.join(name);
        let kept = match (keep_through, path.exists()) {
            (Some(step), true) => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                text.lines()
                    .filter(|line| {
                        serde_json::from_str::<Value>(line)
                            .ok()
                            .and_then(|v| v.get("step").and_then(Value::as_u64))
                            .is_some_and(|s| s as usize <= step)
                    })
                    .map(|line| format!("{line}\n"))
                    .collect::<String>()
            }
            _ => String::new(),
        };
        let temp = path.with_extension("jsonl.tmp");
        std::fs::write(&temp, kept).with_context(|| format!("cannot write {}", temp.display()))?;
        std::fs::rename(&temp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(JsonlLog { path })
    }

    pub fn append(&self, record: &Value) -> anyhow::Result<()> {
        let mut file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot append to {}", self.path.display()))?;
        writeln!(file, "{record}").with_context(|| format!("cannot append to {}", self.path.display()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Mean and (population) standard deviation.
pub fn mean_std(values: &[f32]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
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

    #[test]
    fn mean_and_std() {
        assert_eq!(mean_std(&[1.0, 3.0]), (2.0, 1.0));
        assert_eq!(mean_std(&[]), (0.0, 0.0));
    }
}
