//! What a run reads, by content. The same path may come to hold other files — a model
//! re-initialised in place, a data file regenerated, a machine's stale copy — and a resumed run
//! or another rank would then compute something else under the same config, in silence. Each
//! checkpoint records these fingerprints; `--resume` compares them as it compares the config,
//! and the ranks of a distributed run compare their data. A reward objective's `file` option
//! (a Python reward's) counts too: a plugin resolves a relative one against the working
//! directory, so a resume from another directory could read another file.

use super::config::RunConfig;
use super::resume::ConfigChange;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// sha256 (hex) of the files a run reads after its start.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct InputFingerprints {
    /// `model.path`'s files, when the run reads them after its start: the frozen reference
    /// (`train` with beta > 0) or the base model under LoRA adapters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `data.path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// `data.eval_path`, when `train` evaluates on it (`run.eval_steps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_data: Option<String>,
    /// `train`'s reward objectives' `file` options that name a file (as the working directory
    /// resolves them), by key: `reward.objectives[NAME].options.file`. Only `file`: another
    /// option may name what a plugin writes (a cache, a log), which changes as the run goes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub objective_files: BTreeMap<String, String>,
}

/// The files of a directory that are hashed: weights, configs, tokenizers, templates, data.
const HASHED_EXTENSIONS: [&str; 4] = ["safetensors", "json", "jsonl", "jinja"];

impl InputFingerprints {
    /// The fingerprints of what `mode` (`train` or `sft`) reads under `config`.
    pub fn of(config: &RunConfig, mode: &str) -> anyhow::Result<Self> {
        let reads_model = config.model.lora.is_some() || (mode == "train" && config.algorithm.beta > 0.0);
        let evaluates = mode == "train" && config.run.eval_steps > 0;
        Ok(InputFingerprints {
            model: reads_model
                .then(|| sha256_of(&config.model.path).context("model.path"))
                .transpose()?,
            data: Some(sha256_of(&config.data.path).context("data.path")?),
            eval_data: match (&config.data.eval_path, evaluates) {
                (Some(path), true) => Some(sha256_of(path).context("data.eval_path")?),
                _ => None,
            },
            objective_files: if mode == "train" {
                objective_files(config)
            } else {
                BTreeMap::new()
            },
        })
    }

    /// The data's fingerprints alone: what the ranks other than 0 compare (only rank 0
    /// checkpoints, and reading a large model's files on every rank costs each the time).
    pub fn of_data(config: &RunConfig, mode: &str) -> anyhow::Result<Self> {
        let mut data_only = config.clone();
        data_only.model.lora = None;
        data_only.algorithm.beta = 0.0;
        // Another machine's working directory holds the files its own plugins read.
        data_only.reward.objectives.clear();
        Self::of(&data_only, mode)
    }

    /// Each input whose fingerprint differs from `was`'s, as a change of its config key (an
    /// input either side did not record is not compared).
    pub fn changes_since(&self, was: &Self) -> Vec<ConfigChange> {
        let objective_files = self.objective_files.iter().map(|(key, now)| {
            (
                format!("{key} (its contents)"),
                was.objective_files.get(key).cloned(),
                Some(now.clone()),
            )
        });
        [
            (
                "model.path (its files)".to_string(),
                was.model.clone(),
                self.model.clone(),
            ),
            (
                "data.path (its contents)".to_string(),
                was.data.clone(),
                self.data.clone(),
            ),
            (
                "data.eval_path (its contents)".to_string(),
                was.eval_data.clone(),
                self.eval_data.clone(),
            ),
        ]
        .into_iter()
        .chain(objective_files)
        .filter_map(|(key, was, now)| match (was, now) {
            (Some(was), Some(now)) if was != now => Some(ConfigChange {
                key,
                was: format!("sha256 {}…", &was[..12.min(was.len())]).into(),
                now: format!("sha256 {}…", &now[..12.min(now.len())]).into(),
            }),
            _ => None,
        })
        .collect()
    }
}

/// The reward objectives' `file` options that name a readable file, hashed, by key (one that
/// cannot be read is its plugin's error to name).
fn objective_files(config: &RunConfig) -> BTreeMap<String, String> {
    config
        .reward
        .objectives
        .iter()
        .filter_map(|objective| {
            let file = Path::new(objective.options.get("file")?.as_str()?);
            let hash = sha256_of(file).ok().filter(|_| file.is_file())?;
            let name = objective.name.as_deref().unwrap_or(&objective.plugin);
            Some((format!("reward.objectives[{name}].options.file"), hash))
        })
        .collect()
}

/// sha256 of a file's bytes, or of a directory's hashed files (each by name, length and
/// bytes, in name order; not recursive).
pub fn sha256_of(path: &Path) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    let metadata = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if metadata.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("cannot list {}", path.display()))?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|file| {
                file.is_file()
                    && file
                        .extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| HASHED_EXTENSIONS.contains(&e))
            })
            .collect();
        files.sort();
        for file in files {
            let name = file
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            hasher.update(name.as_bytes());
            hasher.update(std::fs::metadata(&file)?.len().to_le_bytes());
            hash_file(&file, &mut hasher)?;
        }
    } else {
        hash_file(path, &mut hasher)?;
    }
    Ok(format!("{:x}", hasher.finalize()))
}

fn hash_file(path: &Path, hasher: &mut Sha256) -> anyhow::Result<()> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file
            .read(&mut buffer)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if read == 0 {
            return Ok(());
        }
        hasher.update(&buffer[..read]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_s_fingerprint_follows_its_hashed_files_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        std::fs::write(dir.path().join("model.safetensors"), b"weights").unwrap();
        let first = sha256_of(dir.path()).unwrap();
        std::fs::write(dir.path().join("README.md"), "notes").unwrap();
        assert_eq!(
            sha256_of(dir.path()).unwrap(),
            first,
            "a README is not what the run reads"
        );
        std::fs::write(dir.path().join("model.safetensors"), b"other weights").unwrap();
        assert_ne!(sha256_of(dir.path()).unwrap(), first);
    }

    #[test]
    fn only_inputs_recorded_on_both_sides_are_compared() {
        let was = InputFingerprints {
            model: Some("aa".repeat(32)),
            data: Some("bb".repeat(32)),
            eval_data: None,
            objective_files: BTreeMap::from([("reward.objectives[ok].options.file".into(), "ee".repeat(32))]),
        };
        let mut now = was.clone();
        assert!(now.changes_since(&was).is_empty());
        now.eval_data = Some("cc".repeat(32));
        assert!(now.changes_since(&was).is_empty(), "not recorded then");
        now.model = Some("dd".repeat(32));
        let changes = now.changes_since(&was);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].key, "model.path (its files)");
        assert_eq!(changes[0].was, "sha256 aaaaaaaaaaaa…");
        now.model = was.model.clone();
        now.objective_files
            .insert("reward.objectives[ok].options.file".into(), "ff".repeat(32));
        now.objective_files
            .insert("reward.objectives[new].options.file".into(), "ff".repeat(32));
        let changes = now.changes_since(&was);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            changes[0].key,
            "reward.objectives[ok].options.file (its contents)"
        );
    }
}
