//! Reading runs from disk for the report: a run directory's metrics.jsonl and samples.jsonl
//! (and its config and run_info.json) into `RunData`, and each run's label. The run may still
//! be going, so a half-written last line (maybe cut inside a character) is left out quietly,
//! while earlier lines that are not UTF-8 or not records are left out with a warning. Labels
//! tell overlaid runs (`--compare`) apart by the shortest distinct tail of their paths.

use crate::train::checkpoint;
use crate::train::metrics::{METRICS_FILE, SAMPLES_FILE};
use anyhow::{bail, Context};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One run as the report sees it.
pub struct RunData {
    pub label: String,
    pub dir: PathBuf,
    pub metrics: Vec<Value>,
    pub samples: Vec<Value>,
    /// The run's config (from its latest checkpoint), if it has written one.
    pub config: Option<String>,
    /// What it ran on (`run_info.json`), if it says.
    pub environment: Option<Value>,
    /// Lines of its files left out, in words (also logged), for the page to say too.
    pub left_out: Vec<String>,
}

/// Reads a run directory; a half-written last line (a run still going) is left out.
pub fn load_run(dir: &Path) -> anyhow::Result<RunData> {
    let metrics_path = dir.join(METRICS_FILE);
    // A run writes run_info.json as it starts and metrics.jsonl once its model has loaded
    // (tens of seconds for a large one): in between it is a run with no steps yet.
    let starting = dir.join(crate::train::run_info::RUN_INFO_FILE).exists();
    if !metrics_path.exists() && !starting {
        bail!(
            "{} has no {METRICS_FILE}: not a run directory (train or sft writes one)",
            dir.display()
        );
    }
    // Bytes, not text: a run still writing may end mid-character, and that line is not yet
    // written rather than a reason to fail the whole report.
    let mut left_out = Vec::new();
    let mut read = |path: &Path, whole: usize| -> anyhow::Result<Vec<Value>> {
        if !path.exists() {
            return Ok(Vec::new());
        }
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let read = parse_records(&bytes, whole);
        for warning in skipped_lines_warnings(path, &read) {
            tracing::warn!("{warning}");
            left_out.push(warning);
        }
        Ok(read.records)
    };
    let metrics = read(&metrics_path, usize::MAX)?;
    // Only the last SAMPLES_SHOWN samples are kept whole: the others keep what the
    // trade-offs read.
    let samples = read(&dir.join(SAMPLES_FILE), SAMPLES_SHOWN)?;
    let config = checkpoint::latest(dir)?
        .and_then(|(_, checkpoint)| std::fs::read_to_string(checkpoint.join(checkpoint::CONFIG_FILE)).ok());
    Ok(RunData {
        label: run_labels(&[dir.to_path_buf()]).remove(0),
        dir: dir.to_path_buf(),
        metrics,
        samples,
        config,
        environment: std::fs::read_to_string(dir.join(crate::train::run_info::RUN_INFO_FILE))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok()),
        left_out,
    })
}

/// Loads each run and labels it apart from the others (see `run_labels`).
pub fn load_runs(dirs: &[PathBuf]) -> anyhow::Result<Vec<RunData>> {
    let mut runs = dirs
        .iter()
        .map(|dir| load_run(dir))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (run, label) in runs.iter_mut().zip(run_labels(dirs)) {
        run.label = label;
    }
    Ok(runs)
}

/// A label for each run: the shortest tail of its (canonical) path that no other run's path
/// ends with, so `x/a` and `y/a` read `x/a` and `y/a`, not `a` twice, while runs with names
/// of their own keep just the name. Where no tail is distinct (the same run named twice, or
/// one run's whole path is the tail of another's) the path as given stands.
fn run_labels(dirs: &[PathBuf]) -> Vec<String> {
    let parts: Vec<Vec<String>> = dirs.iter().map(|dir| path_parts(dir)).collect();
    dirs.iter()
        .enumerate()
        .map(|(i, dir)| distinct_tail(&parts, i).unwrap_or_else(|| dir.display().to_string()))
        .collect()
}

/// The named components of `dir`, resolved (`.` is the folder's own name) where it can be.
fn path_parts(dir: &Path) -> Vec<String> {
    dir.canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .components()
        .filter_map(|part| match part {
            std::path::Component::Normal(name) => Some(name.to_string_lossy().to_string()),
            _ => None,
        })
        .collect()
}

/// The shortest tail of `parts[i]` that no other path ends with, joined by `/`.
fn distinct_tail(parts: &[Vec<String>], i: usize) -> Option<String> {
    let own = &parts[i];
    (1..=own.len())
        .map(|length| &own[own.len() - length..])
        .find(|tail| {
            parts
                .iter()
                .enumerate()
                .all(|(j, other)| j == i || !other.ends_with(tail))
        })
        .map(|tail| tail.join("/"))
}

/// What a run's JSONL file holds: its records, and the lines (numbered from 1) left out.
#[derive(Debug, Default)]
struct ReadRecords {
    records: Vec<Value>,
    /// Lines that are not UTF-8 (corrupted), before the last.
    not_utf8: Vec<usize>,
    /// Lines that are not a run's records (not JSON, `"step": "x"`, a negative step).
    foreign: Vec<usize>,
}

/// A sample reduced to its step, example id and scores (marked `shown: false`).
fn scores_only(sample: &mut Value) {
    let Value::Object(fields) = sample else {
        return;
    };
    let example = fields.get("example").cloned().unwrap_or(Value::Null);
    let id = crate::report::example_id(&serde_json::json!({ "example": example }));
    fields.retain(|key, _| matches!(key.as_str(), "step" | "scores"));
    fields.insert("example".into(), Value::String(id));
    fields.insert(NOT_SHOWN.into(), Value::Bool(true));
}

/// The key [`scores_only`] marks a sample with: the report counts it but does not list it.
pub const NOT_SHOWN: &str = "crpo:not_shown";

/// The samples a report shows in full: the last of a run's (a run of 50,000 steps wrote
/// hundreds of megabytes, an 80 MB page a browser took minutes to open).
pub const SAMPLES_SHOWN: usize = 2000;

/// The records of a JSONL file's bytes: JSON objects with a whole `step` ≥ 0. A last line
/// without its newline that does not read (a run still writing, or killed mid-line, maybe
/// inside a multi-byte character) is not yet written and left out quietly; earlier lines
/// that are not UTF-8 or not records (edited, corrupted) are counted as left out. Only the
/// records of the last `whole` lines are kept whole: earlier ones keep their step, example
/// id and scores (what the trade-offs read), as they are read, so their text is not kept.
fn parse_records(bytes: &[u8], whole: usize) -> ReadRecords {
    let mut read = ReadRecords::default();
    let lines: Vec<&[u8]> = bytes.split(|&byte| byte == b'\n').collect();
    let unfinished = lines.len() - 1; // what follows the last newline ("" when it ends with one)
    let whole_from = lines.len().saturating_sub(whole.saturating_add(1));
    for (index, line) in lines.iter().enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Ok(text) = std::str::from_utf8(line) else {
            if index != unfinished {
                read.not_utf8.push(index + 1);
            }
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(mut record) if record.get("step").is_some_and(Value::is_u64) => {
                if index < whole_from {
                    scores_only(&mut record);
                }
                read.records.push(record)
            }
            Err(_) if index == unfinished => {}
            _ => read.foreign.push(index + 1),
        }
    }
    read
}

/// A warning for each kind of line `read` left out, naming the file and the lines.
fn skipped_lines_warnings(path: &Path, read: &ReadRecords) -> Vec<String> {
    let mut warnings = Vec::new();
    if !read.not_utf8.is_empty() {
        warnings.push(format!(
            "{}, {}: not valid UTF-8 (corrupted); left out of the report",
            path.display(),
            line_list(&read.not_utf8)
        ));
    }
    if !read.foreign.is_empty() {
        warnings.push(format!(
            "{}, {}: not the records a run writes (each is a JSON object with a whole `step` ≥ 0); left out of the report",
            path.display(),
            line_list(&read.foreign)
        ));
    }
    warnings
}

/// `line 3`, `lines 3, 7`, or the first five lines and how many more.
fn line_list(lines: &[usize]) -> String {
    const SHOWN: usize = 5;
    let shown: Vec<String> = lines.iter().take(SHOWN).map(usize::to_string).collect();
    match lines.len() {
        1 => format!("line {}", shown[0]),
        n if n <= SHOWN => format!("lines {}", shown.join(", ")),
        n => format!("lines {} and {} more", shown.join(", "), n - SHOWN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A metrics.jsonl line at `step` (a record a run writes).
    fn metrics_line(step: u64) -> String {
        format!(
            "{}\n",
            serde_json::json!({"step": step, "reward": {"mean": 0.5, "std": 0.1}})
        )
    }

    #[test]
    fn only_records_with_a_whole_step_are_read() {
        let text =
            "{\"step\": 1}\nnot json\n{\"step\": \"x\"}\n{\"step\": -2}\n{\"step\": 2}\n{\"step\": 3, \"ha";
        let steps: Vec<u64> = parse_records(text.as_bytes(), usize::MAX)
            .records
            .iter()
            .map(|r| r["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, [1, 2]);
    }

    /// Samples before the last `whole` lines keep only what the trade-offs read.
    #[test]
    fn earlier_samples_keep_their_step_example_and_scores_only() {
        let sample = |step: u64| {
            format!(
                "{}\n",
                serde_json::json!({"step": step, "example": {"id": format!("q{step}"), "question": "long"},
                    "completion": "text", "scores": {"accuracy": 1.0}})
            )
        };
        let text: String = (1..=3).map(sample).collect();
        let read = parse_records(text.as_bytes(), 1);
        assert_eq!(
            read.records[0],
            serde_json::json!({"step": 1, "example": "q1", "scores": {"accuracy": 1.0}, NOT_SHOWN: true})
        );
        assert!(read.records[1].get(NOT_SHOWN).is_some());
        assert_eq!(read.records[2]["completion"], "text", "the last is whole");
    }

    #[test]
    fn runs_with_the_same_folder_name_are_labelled_by_their_distinct_paths() {
        let root = tempfile::tempdir().unwrap();
        for dir in ["x/a", "y/a", "z/b"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        let dirs: Vec<PathBuf> = ["x/a", "y/a", "z/b"]
            .iter()
            .map(|d| root.path().join(d))
            .collect();
        assert_eq!(run_labels(&dirs), ["x/a", "y/a", "b"]);
        // The same run twice has no distinct tail: each keeps the path it was named by.
        let twice = [root.path().join("x/a"), root.path().join("x/../x/a")];
        let given: Vec<String> = twice.iter().map(|d| d.display().to_string()).collect();
        assert_eq!(run_labels(&twice), given);
        assert_eq!(run_labels(&[root.path().join("z/b")]), ["b"]);
    }

    #[test]
    fn a_last_line_cut_inside_a_character_is_not_yet_written() {
        let mut bytes = metrics_line(1).into_bytes();
        bytes.extend_from_slice(b"{\"step\":2,\"note\":\"caf\xC3");
        let read = parse_records(&bytes, usize::MAX);
        assert_eq!(read.records.len(), 1);
        assert!(read.not_utf8.is_empty() && read.foreign.is_empty(), "{read:?}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(METRICS_FILE), &bytes).unwrap();
        std::fs::write(
            dir.path().join(SAMPLES_FILE),
            b"{\"step\":1,\"completion\":\"\xE2\x80",
        )
        .unwrap();
        let run = load_run(dir.path()).unwrap();
        assert_eq!((run.metrics.len(), run.samples.len()), (1, 0));
    }

    #[test]
    fn an_earlier_line_that_is_not_utf8_is_named_and_left_out() {
        let mut bytes = metrics_line(1).into_bytes();
        bytes.extend_from_slice(b"{\"step\":2,\"x\":\"\xFF\"}\r\n");
        bytes.extend_from_slice(metrics_line(3).as_bytes());
        bytes.extend_from_slice(b"not json\n");
        let read = parse_records(&bytes, usize::MAX);
        let steps: Vec<u64> = read.records.iter().map(|r| r["step"].as_u64().unwrap()).collect();
        assert_eq!(steps, [1, 3]);
        assert_eq!(
            (read.not_utf8.as_slice(), read.foreign.as_slice()),
            (&[2][..], &[4][..])
        );
        let warnings = skipped_lines_warnings(Path::new("run/metrics.jsonl"), &read);
        assert_eq!(warnings.len(), 2);
        assert!(
            warnings[0].starts_with("run/metrics.jsonl, line 2: not valid UTF-8"),
            "{}",
            warnings[0]
        );
        assert!(
            warnings[1].starts_with("run/metrics.jsonl, line 4: not the records"),
            "{}",
            warnings[1]
        );
        assert_eq!(
            line_list(&[1, 2, 3, 4, 5, 6, 7]),
            "lines 1, 2, 3, 4, 5 and 2 more"
        );
    }
}
