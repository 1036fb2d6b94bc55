//! Checkpoints: `<run>/checkpoints/step-NNNNNN/` holding the policy as a Hugging Face
//! directory (`model/`), the optimizer state, the trainer state and the config. Each is
//! written into a temporary directory, synced, then renamed into place, so a run killed at
//! any moment leaves either a complete checkpoint or none (stray temporaries are removed on
//! the next start).

use super::data::DataCursor;
use super::input_fingerprints::InputFingerprints;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};

pub const MODEL_DIR: &str = "model";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";
pub const CONFIG_FILE: &str = "config.toml";
/// Every file the checkpoint was written with, and its length: a file deleted or cut later
/// (a tokenizer_config.json gone switched the chat template in silence) makes the checkpoint
/// unusable rather than a different one.
pub const MANIFEST_FILE: &str = "manifest.json";
const TEMP_PREFIX: &str = ".tmp-";
/// An old checkpoint is renamed to this prefix before it is deleted, so a kill mid-deletion
/// never leaves a half-deleted checkpoint that is still listed.
const TRASH_PREFIX: &str = ".trash-";

/// Everything besides tensors that a resume needs. All randomness derives from the seed and
/// the step, so the seed and the step are the random state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Steps completed.
    pub step: usize,
    /// Optimizer updates taken (the scheduler's position).
    pub optimizer_updates: i64,
    pub cursor: DataCursor,
    pub seed: u64,
    /// What the run trains (`train` or `sft`); a resume of the other kind is refused.
    pub mode: String,
    /// Steps whose update was skipped as non-finite so far.
    #[serde(default)]
    pub nonfinite_steps: usize,
    /// Processes the run was trained across (1: one); a resume must use as many.
    #[serde(default = "one_process")]
    pub world_size: usize,
    /// What the run read, by content (absent in checkpoints of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<InputFingerprints>,
}

fn one_process() -> usize {
    1
}

/// The directory of a run's checkpoints, inside its run directory.
pub const CHECKPOINTS_DIR: &str = "checkpoints";

pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join(CHECKPOINTS_DIR)
}

/// Whether a checkpoint of `run_dir` is being written (its temporary directory is there; a
/// run clears those a kill left before it starts).
pub fn being_written(run_dir: &Path) -> bool {
    std::fs::read_dir(checkpoints_dir(run_dir)).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|entry| entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX))
    })
}

/// Moves a checkpoint that cannot be loaded out of the way (kept for inspection, never
/// listed again), so the run can write that step anew.
pub fn set_aside(checkpoint: &Path) -> anyhow::Result<PathBuf> {
    let name = checkpoint
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let parent = checkpoint.parent().unwrap_or(Path::new("."));
    let mut target = parent.join(format!("unusable-{name}"));
    let mut n = 1;
    while target.exists() {
        n += 1;
        target = parent.join(format!("unusable-{name}-{n}"));
    }
    std::fs::rename(checkpoint, &target).with_context(|| {
        format!(
            "cannot move the unusable checkpoint {} aside",
            checkpoint.display()
        )
    })?;
    Ok(target)
}

fn step_name(step: usize) -> String {
    format!("step-{step:06}")
}

fn step_of(name: &str) -> Option<usize> {
    name.strip_prefix("step-")?.parse().ok()
}

/// Checkpoints, oldest first (only complete ones are ever renamed into place; one damaged
/// later is found when it is loaded).
pub fn list(run_dir: &Path) -> anyhow::Result<Vec<(usize, PathBuf)>> {
    let dir = checkpoints_dir(run_dir);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(step) = step_of(&name) {
            found.push((step, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Removes temporaries and half-deleted checkpoints a killed run left behind.
pub fn remove_temporaries(run_dir: &Path) -> anyhow::Result<()> {
    let dir = checkpoints_dir(run_dir);
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with(TEMP_PREFIX) || name.starts_with(TRASH_PREFIX) {
            std::fs::remove_dir_all(entry.path()).with_context(|| {
                format!("cannot remove the partial checkpoint {}", entry.path().display())
            })?;
        }
    }
    Ok(())
}

pub fn latest(run_dir: &Path) -> anyhow::Result<Option<(usize, PathBuf)>> {
    Ok(list(run_dir)?.pop())
}

pub fn read_state(checkpoint: &Path) -> anyhow::Result<TrainerState> {
    let path = checkpoint.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a trainer state", path.display()))
}

/// Writes a checkpoint atomically: `write_contents` fills the temporary directory (model and
/// optimizer); the state and config are added, everything is synced, then renamed. The
/// oldest checkpoints beyond `keep` are deleted afterwards.
pub fn save(
    run_dir: &Path,
    state: &TrainerState,
    config_toml: &str,
    keep: usize,
    write_contents: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<PathBuf> {
    let dir = checkpoints_dir(run_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = step_name(state.step);
    let temp = dir.join(format!("{TEMP_PREFIX}{name}"));
    if temp.exists() {
        std::fs::remove_dir_all(&temp)?;
    }
    std::fs::create_dir_all(&temp)?;
    let written = (|| {
        write_contents(&temp)?;
        std::fs::write(temp.join(STATE_FILE), serde_json::to_string_pretty(state)?)?;
        std::fs::write(temp.join(CONFIG_FILE), config_toml)?;
        let manifest = serde_json::to_string_pretty(&file_lengths(&temp)?)?;
        std::fs::write(temp.join(MANIFEST_FILE), manifest)?;
        sync_tree(&temp)
    })();
    if let Err(error) = written {
        // A full disk: what was written of this checkpoint is freed, not left to fill it.
        let _ = std::fs::remove_dir_all(&temp);
        return Err(error);
    }
    let target = dir.join(&name);
    if target.exists() {
        bail!("checkpoint {} already exists", target.display());
    }
    std::fs::rename(&temp, &target)
        .with_context(|| format!("cannot move the checkpoint to {}", target.display()))?;
    File::open(&dir)?.sync_all()?;
    let all = list(run_dir)?;
    for (step, old) in &all[..all.len().saturating_sub(keep)] {
        // A report or an evaluation saved into a checkpoint is the user's, not ours to delete.
        // A checkpoint that cannot be checked is kept too: the run goes on either way.
        let foreign = files_not_written_by_crpo(old).unwrap_or_else(|error| vec![format!("{error:#}")]);
        if !foreign.is_empty() {
            crate::warn_once::warn_once(&format!("kept checkpoint {}", old.display()), || {
                format!(
                    "kept the old checkpoint {} beyond run.save_total_limit = {keep}: it holds files crpo did not write ({}); delete it yourself once they are safe",
                    old.display(),
                    foreign.join(", ")
                )
            });
            continue;
        }
        let trash = dir.join(format!("{TRASH_PREFIX}{}", step_name(*step)));
        std::fs::rename(old, &trash)
            .with_context(|| format!("cannot retire the old checkpoint {}", old.display()))?;
        std::fs::remove_dir_all(&trash)
            .with_context(|| format!("cannot remove the old checkpoint {}", trash.display()))?;
    }
    Ok(target)
}

/// Every file under `root` (paths relative to it, `/`-separated) and its length.
fn file_lengths(root: &Path) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    fn walk(
        root: &Path,
        dir: &Path,
        found: &mut std::collections::BTreeMap<String, u64>,
    ) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                walk(root, &path, found)?;
            } else {
                let relative = path.strip_prefix(root).unwrap_or(&path);
                let name = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                found.insert(name, std::fs::metadata(&path)?.len());
            }
        }
        Ok(())
    }
    let mut found = std::collections::BTreeMap::new();
    walk(root, root, &mut found)?;
    Ok(found)
}

/// Files under `checkpoint` that its manifest does not list: put there since (none for a
/// checkpoint of a version without a manifest).
fn files_not_written_by_crpo(checkpoint: &Path) -> anyhow::Result<Vec<String>> {
    let Some(written) = read_manifest(checkpoint)? else {
        return Ok(Vec::new());
    };
    Ok(file_lengths(checkpoint)?
        .into_keys()
        .filter(|file| file != MANIFEST_FILE && !written.contains_key(file))
        .collect())
}

/// Whether every file the checkpoint was written with is there at its length (checkpoints
/// of versions without a manifest pass).
pub fn check_manifest(checkpoint: &Path) -> anyhow::Result<()> {
    let Some(written) = read_manifest(checkpoint)? else {
        return Ok(());
    };
    for (file, length) in written {
        let file = checkpoint.join(&file);
        match std::fs::metadata(&file) {
            Err(_) => bail!(
                "{} is missing (the checkpoint was written with it)",
                file.display()
            ),
            Ok(metadata) if metadata.len() != length => bail!(
                "{} holds {} bytes, but the checkpoint wrote {length}",
                file.display(),
                metadata.len()
            ),
            Ok(_) => {}
        }
    }
    Ok(())
}

/// The files a checkpoint was written with and their lengths (`None`: no manifest, a
/// checkpoint of an earlier version).
fn read_manifest(checkpoint: &Path) -> anyhow::Result<Option<std::collections::BTreeMap<String, u64>>> {
    let path = checkpoint.join(MANIFEST_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("{} is not a checkpoint manifest", path.display()))
}

/// fsyncs every file and directory under `root` so the rename publishes durable contents.
fn sync_tree(root: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(root)? {
        let path = entry?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            File::open(&path)?.sync_all()?;
        }
    }
    File::open(root)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: usize) -> TrainerState {
        TrainerState {
            world_size: 1,
            step,
            optimizer_updates: step as i64,
            cursor: DataCursor::default(),
            seed: 0,
            mode: "train".into(),
            nonfinite_steps: 0,
            inputs: None,
        }
    }

    fn write_weights(dir: &Path) -> anyhow::Result<()> {
        std::fs::write(dir.join("weights.bin"), b"w")?;
        Ok(())
    }

    #[test]
    fn keeps_the_last_k_and_finds_the_latest() {
        let run = tempfile::tempdir().unwrap();
        for step in [2, 4, 6] {
            save(run.path(), &state(step), "", 2, write_weights).unwrap();
        }
        let steps: Vec<usize> = list(run.path()).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![4, 6]);
        let (step, dir) = latest(run.path()).unwrap().unwrap();
        assert_eq!(step, 6);
        assert_eq!(read_state(&dir).unwrap(), state(6));
        assert!(dir.join("weights.bin").exists());
    }

    /// A report or an evaluation the user saved into a checkpoint keeps that checkpoint.
    #[test]
    fn an_old_checkpoint_holding_the_user_s_files_is_kept() {
        let run = tempfile::tempdir().unwrap();
        let first = save(run.path(), &state(2), "", 1, write_weights).unwrap();
        std::fs::create_dir_all(first.join("model/merged")).unwrap();
        std::fs::write(first.join("model/merged/config.json"), "{}").unwrap();
        std::fs::write(first.join("report.html"), "mine").unwrap();
        assert_eq!(
            files_not_written_by_crpo(&first).unwrap(),
            ["model/merged/config.json", "report.html"]
        );
        save(run.path(), &state(4), "", 1, write_weights).unwrap();
        let steps: Vec<usize> = list(run.path()).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, [2, 4]);
        assert_eq!(
            std::fs::read_to_string(first.join("report.html")).unwrap(),
            "mine"
        );
        // One of crpo's own is deleted as before.
        save(run.path(), &state(6), "", 1, write_weights).unwrap();
        let steps: Vec<usize> = list(run.path()).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, [2, 6]);
    }

    #[test]
    fn a_failed_write_leaves_no_checkpoint_and_temporaries_are_cleared() {
        let run = tempfile::tempdir().unwrap();
        let failed = save(run.path(), &state(2), "", 2, |dir| {
            std::fs::write(dir.join("weights.bin"), b"half")?;
            anyhow::bail!("disk full")
        });
        assert!(failed.is_err());
        assert!(
            latest(run.path()).unwrap().is_none(),
            "a partial checkpoint is never listed"
        );
        // Freed at once (a full disk stayed full until the next start).
        assert_eq!(std::fs::read_dir(checkpoints_dir(run.path())).unwrap().count(), 0);
    }

    #[test]
    fn a_checkpoint_half_deleted_by_a_kill_is_never_listed_and_is_cleared() {
        let run = tempfile::tempdir().unwrap();
        for step in [2, 4] {
            save(run.path(), &state(step), "", 2, write_weights).unwrap();
        }
        // What a kill between the rename and the removal of rotation leaves.
        let dir = checkpoints_dir(run.path());
        std::fs::rename(dir.join("step-000002"), dir.join(".trash-step-000002")).unwrap();
        let steps: Vec<usize> = list(run.path()).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![4]);
        remove_temporaries(run.path()).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let aside = set_aside(&dir.join("step-000004")).unwrap();
        assert!(aside.ends_with("unusable-step-000004"));
        assert!(list(run.path()).unwrap().is_empty());
    }
}
