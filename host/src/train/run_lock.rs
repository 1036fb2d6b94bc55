//! One process at a time in a run directory: two starts into one directory (a double launch,
//! a scheduler's requeue while the first still runs) would interleave their metrics and race
//! for the same checkpoint names. The lock is `flock`'s, so it goes with the process however
//! it ends (a SIGKILLed run resumes without anyone removing a stale lock).

use super::config::RunConfig;
use anyhow::{bail, Context};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The lock file a run keeps in its directory.
pub const LOCK_FILE: &str = ".crpo-run.lock";

/// Held while a run uses its directory; released when dropped or when the process ends.
pub struct RunLock {
    _file: File,
}

/// Takes `run_dir` (made if new) for this process, or names the process that holds it.
/// `setting` names the config key that moves the run, for the message.
pub fn lock(run_dir: &Path, setting: &str) -> anyhow::Result<RunLock> {
    refuse_an_unfit_run_dir(run_dir, setting)?;
    // A start that failed in a directory it made removes it, lock file and all, while it holds
    // the lock: a lock then taken on that removed file locks nothing, so take the one at the
    // path again (twice at most: only such a start removes the file).
    for _ in 0..3 {
        let lock = lock_file(run_dir, setting)?;
        let path = run_dir.join(LOCK_FILE);
        let held = lock._file.metadata().map(|m| (m.dev(), m.ino())).ok();
        let current = std::fs::metadata(&path).map(|m| (m.dev(), m.ino())).ok();
        if held.is_some() && held == current {
            return Ok(lock);
        }
    }
    bail!(
        "{}: its lock file {LOCK_FILE} keeps being removed by another crpo-host start: try again",
        run_dir.display()
    )
}

/// One try of [`lock`]: the directory made if new, its lock file opened and locked.
fn lock_file(run_dir: &Path, setting: &str) -> anyhow::Result<RunLock> {
    std::fs::create_dir_all(run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    let path = run_dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
            // A filesystem without locks (some network mounts) must not stop a run.
            tracing::warn!(
                "cannot lock {} ({error}): nothing stops another run from using this directory at the same time",
                path.display()
            );
            return Ok(RunLock { _file: file });
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        bail!(
            "{} is in use by another crpo-host run{}: wait for it to end (or stop it) before starting or resuming this one, or choose another {setting}",
            run_dir.display(),
            if holder.is_empty() {
                String::new()
            } else {
                format!(" (process {holder})")
            }
        );
    }
    // Who holds it, for the message above.
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    Ok(RunLock { _file: file })
}

/// The directories a start creates for `run_dir`, innermost first: it and each missing
/// parent (none when it exists).
pub fn missing_directories(run_dir: &Path) -> Vec<PathBuf> {
    run_dir
        .ancestors()
        .take_while(|dir| !dir.as_os_str().is_empty() && matches!(dir.try_exists(), Ok(false)))
        // `a/..` names a directory that exists once `a` is made: never one this start made.
        .filter(|dir| dir.file_name().is_some())
        .map(Path::to_path_buf)
        .collect()
}

/// Removes what a refused start made ([`missing_directories`] before it): the run directory
/// where it holds nothing but its lock file, then each parent it made that is left empty.
pub fn remove_made_directories(made: &[PathBuf]) {
    let Some((run_dir, parents)) = made.split_first() else {
        return;
    };
    remove_if_only_the_lock(run_dir);
    for parent in parents {
        // Only an empty directory is removed: anything put there since stays.
        if std::fs::remove_dir(parent).is_err() {
            break;
        }
    }
}

/// Removes `run_dir` where it holds nothing but its lock file: a start refused before it
/// wrote anything, into a directory it made (best effort: what cannot be removed stays).
pub fn remove_if_only_the_lock(run_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return;
    };
    let names: Vec<_> = entries
        .filter_map(|entry| entry.ok().map(|e| e.file_name()))
        .collect();
    if names.iter().all(|name| name == LOCK_FILE) {
        let _ = std::fs::remove_file(run_dir.join(LOCK_FILE));
        let _ = std::fs::remove_dir(run_dir);
    }
}

/// A run directory is refused (`setting` names its key) where it names a file; where it is
/// the filesystem's root or the home directory (a run's files and checkpoints would sit among
/// everything else there); and inside another run's checkpoints/, which that run rotates
/// away (`run.save_total_limit`) with whatever is inside.
pub fn refuse_an_unfit_run_dir(run_dir: &Path, setting: &str) -> anyhow::Result<()> {
    if run_dir.exists() && !run_dir.is_dir() {
        bail!(
            "{setting} {} is a file: a run writes a directory there (choose another {setting})",
            run_dir.display()
        );
    }
    if run_dir.as_os_str().is_empty() {
        bail!("{setting} is empty: name the run's directory");
    }
    let resolved = crate::atomic_file::written_path(run_dir);
    let home = std::env::var_os("HOME").and_then(|home| Path::new(&home).canonicalize().ok());
    if resolved.parent().is_none() || home.is_some_and(|home| home == resolved) {
        bail!(
            "{setting} {} is {}: a run writes its metrics, samples and checkpoints into its own directory; name one (e.g. runs/NAME)",
            run_dir.display(),
            if resolved.parent().is_none() { "the filesystem's root" } else { "the home directory" }
        );
    }
    for checkpoints in resolved.ancestors() {
        let Some(run) = checkpoints.parent() else { break };
        if checkpoints.file_name() == Some(super::checkpoint::CHECKPOINTS_DIR.as_ref())
            && run.join(LOCK_FILE).exists()
        {
            bail!(
                "{setting} {} is inside {}, the checkpoints of the run in {}: that run removes old checkpoints with what they hold; choose a directory outside it",
                run_dir.display(),
                checkpoints.display(),
                run.display()
            );
        }
    }
    Ok(())
}

/// A run writes metrics, run_info.json and checkpoints/ into its directory (`key` names it):
/// never into the model it starts from (they would sit among the model's files, whose checksum
/// `--resume` compares, so the run could not be resumed).
pub fn refuse_a_model_as_run_dir(config: &RunConfig, run_dir: &Path, key: &str) -> anyhow::Result<()> {
    let Ok(run_dir_path) = run_dir.canonicalize() else {
        return Ok(());
    };
    let adapter = config.model.lora.as_ref().and_then(|lora| lora.adapter.as_ref());
    for (model, model_key) in [
        (Some(&config.model.path), "model.path"),
        (adapter, "model.lora.adapter"),
    ] {
        if model
            .and_then(|m| m.canonicalize().ok())
            .is_some_and(|m| m == run_dir_path)
        {
            bail!(
                "{key} {} is the model directory {model_key}: a run writes its metrics and checkpoints there, among the model's files; choose another {key}",
                run_dir.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_the_home_directory_and_a_run_s_checkpoints_are_no_run_directory() {
        assert!(refuse_an_unfit_run_dir(Path::new("/"), "run.output_dir")
            .unwrap_err()
            .to_string()
            .contains("the filesystem's root"));
        let home = std::env::var_os("HOME").unwrap();
        if Path::new(&home) != Path::new("/") {
            assert!(refuse_an_unfit_run_dir(Path::new(&home), "run.output_dir")
                .unwrap_err()
                .to_string()
                .contains("the home directory"));
        }
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("checkpoints/step-000002/model");
        std::fs::create_dir_all(&inner).unwrap();
        assert!(
            refuse_an_unfit_run_dir(&inner, "run.output_dir").is_ok(),
            "no run there"
        );
        std::fs::write(dir.path().join(LOCK_FILE), "").unwrap();
        // The directory itself, one inside, one still to be made, one reached by a link.
        let checkpoints = dir.path().join("checkpoints");
        std::os::unix::fs::symlink(&checkpoints, dir.path().join("link")).unwrap();
        for refused in [
            checkpoints.clone(),
            inner,
            checkpoints.join("new/run"),
            dir.path().join("link/new"),
        ] {
            let error = refuse_an_unfit_run_dir(&refused, "run.output_dir")
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("the checkpoints of the run in"),
                "{}: {error}",
                refused.display()
            );
        }
        for fine in [
            dir.path().join("other"),
            checkpoints.join("../other/new"),
            dir.path().to_path_buf(),
        ] {
            assert!(
                refuse_an_unfit_run_dir(&fine, "run.output_dir").is_ok(),
                "{}",
                fine.display()
            );
        }
        let empty = refuse_an_unfit_run_dir(Path::new(""), "run.output_dir").unwrap_err();
        assert!(empty.to_string().contains("is empty"), "{empty}");
    }

    #[test]
    fn a_model_directory_is_no_run_directory() {
        let dir = tempfile::tempdir().unwrap();
        let config = RunConfig::parse(&format!(
            "[model]\npath = \"{}\"\n[data]\npath = \"d\"\n[reward]\npreset = \"crpo\"\n",
            dir.path().display()
        ))
        .unwrap();
        let error = refuse_a_model_as_run_dir(&config, &dir.path().join("."), "sft.output_dir").unwrap_err();
        assert!(error.to_string().contains("sft.output_dir"), "{error}");
        assert!(
            error.to_string().contains("is the model directory model.path"),
            "{error}"
        );
        assert!(refuse_a_model_as_run_dir(&config, &dir.path().join("run"), "run.output_dir").is_ok());
    }

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let first = lock(&run, "run.output_dir").unwrap();
        let error = lock(&run, "run.output_dir").err().unwrap().to_string();
        assert!(
            error.contains("in use by another crpo-host run")
                && error.contains(&format!("process {}", std::process::id())),
            "{error}"
        );
        drop(first);
        lock(&run, "run.output_dir").unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        assert!(lock(&dir.path().join("file"), "run.output_dir").is_err());
    }

    /// A failed start removes the directory it made, lock file included, while holding the
    /// lock: the next start locks a new file at the path, which a third then finds held.
    #[test]
    fn a_directory_removed_with_its_lock_is_locked_anew() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let failed = lock(&run, "run.output_dir").unwrap();
        std::fs::write(run.join("notes.txt"), "mine").unwrap();
        remove_if_only_the_lock(&run);
        assert!(run.join("notes.txt").exists(), "a directory holding more is kept");
        std::fs::remove_file(run.join("notes.txt")).unwrap();
        remove_if_only_the_lock(&run);
        assert!(!run.exists());
        let next = lock(&run, "run.output_dir").unwrap();
        assert!(lock(&run, "run.output_dir").is_err(), "the new lock holds");
        drop((failed, next));
    }

    #[test]
    fn a_refused_start_removes_the_parents_it_made_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("runs/today/sft");
        let made = missing_directories(&run);
        assert_eq!(
            made,
            vec![
                run.clone(),
                dir.path().join("runs/today"),
                dir.path().join("runs")
            ]
        );
        let held = lock(&run, "sft.output_dir").unwrap();
        remove_made_directories(&made);
        assert!(
            !dir.path().join("runs").exists(),
            "every directory it made is gone"
        );
        drop(held);
        // A parent holding something since is kept, and so is what was there before.
        let made = missing_directories(&run);
        let _held = lock(&run, "sft.output_dir").unwrap();
        std::fs::write(dir.path().join("runs/notes.txt"), "mine").unwrap();
        remove_made_directories(&made);
        assert!(!dir.path().join("runs/today").exists());
        assert!(dir.path().join("runs/notes.txt").exists() && dir.path().exists());
        assert!(missing_directories(dir.path()).is_empty());
        // `new/../run2`: `new` is made (by create_dir_all) and removed; `new/..` is not touched.
        let dotted = dir.path().join("new/../run2");
        let made = missing_directories(&dotted);
        assert_eq!(made, vec![dotted.clone(), dir.path().join("new")]);
        let _held = lock(&dotted, "run.output_dir").unwrap();
        remove_made_directories(&made);
        assert!(!dir.path().join("new").exists() && !dir.path().join("run2").exists());
    }
}
