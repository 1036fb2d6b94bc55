//! Files written whole or not at all: into a temporary sibling, then renamed over the target,
//! so a failure or a kill never leaves a half-written file where a user's file was.

use anyhow::Context;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A file being written; it appears at its path only on [`AtomicFile::commit`].
///
/// A path that is not a regular file's — a device, a pipe, `/dev/stdout`, a shell's
/// `>(…)` — is written through instead: renaming over it would replace the device or pipe
/// with a plain file. A link to a regular file is followed, so the link stays a link.
pub struct AtomicFile {
    path: PathBuf,
    sink: Sink,
}

enum Sink {
    Temporary(BufWriter<tempfile::NamedTempFile>),
    Through(BufWriter<std::fs::File>),
}

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Temporary(writer) => writer.write(bytes),
            Sink::Through(writer) => writer.write(bytes),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Temporary(writer) => writer.flush(),
            Sink::Through(writer) => writer.flush(),
        }
    }
}

impl AtomicFile {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        if is_special(path) {
            let file = match own_descriptor(path) {
                // This process's own descriptor, where it stands: opened anew, a file the
                // shell appends to (`>> log`) would be written from its start.
                // SAFETY: dup gives a new descriptor that the File then owns.
                Some(fd) => match unsafe { libc::dup(fd) } {
                    -1 => Err(std::io::Error::last_os_error()),
                    copy => Ok(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(copy) }),
                },
                None => std::fs::OpenOptions::new().write(true).open(path),
            }
            .with_context(|| format!("cannot write to {}", path.display()))?;
            return Ok(AtomicFile {
                path: path.to_path_buf(),
                sink: Sink::Through(BufWriter::new(file)),
            });
        }
        let path = &regular_target(path)?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // A replaced file keeps its permissions; a new one gets a plain file's (the temporary
        // is created private).
        let permissions = match std::fs::metadata(path) {
            Ok(existing) => existing.permissions(),
            Err(_) => std::os::unix::fs::PermissionsExt::from_mode(0o644),
        };
        let temp = tempfile::Builder::new()
            .prefix(".tmp-")
            .permissions(permissions)
            .tempfile_in(parent)
            .map_err(|error| cannot_create_in(parent, &error))?;
        Ok(AtomicFile {
            path: path.to_path_buf(),
            sink: Sink::Temporary(BufWriter::new(temp)),
        })
    }

    pub fn writer(&mut self) -> &mut impl Write {
        &mut self.sink
    }

    /// Writes one JSON value as a line.
    pub fn write_line(&mut self, value: &serde_json::Value) -> anyhow::Result<()> {
        writeln!(self.sink, "{value}").with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Flushes and syncs what was written, where a full disk shows, without publishing it.
    fn finish(&mut self) -> anyhow::Result<()> {
        let path = &self.path;
        self.sink
            .flush()
            .with_context(|| format!("cannot write {}", path.display()))?;
        if let Sink::Temporary(writer) = &self.sink {
            writer
                .get_ref()
                .as_file()
                .sync_all()
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    /// Flushes, syncs and renames the file into place (a device or pipe: flushes).
    pub fn commit(self) -> anyhow::Result<()> {
        let path = self.path;
        let writer = match self.sink {
            Sink::Through(mut writer) => {
                return writer
                    .flush()
                    .with_context(|| format!("cannot write to {}", path.display()));
            }
            Sink::Temporary(writer) => writer,
        };
        let temp = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", path.display()))?;
        temp.as_file()
            .sync_all()
            .with_context(|| format!("cannot write {}", path.display()))?;
        temp.persist(&path)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

/// Whether `path` is, or links to, something other than a regular file or directory (a
/// device, a pipe, a socket), or one of this process's descriptors (`/dev/stdout`,
/// `/dev/fd/N`, `/proc/self/fd/N`: a file the shell opened, to be written where it points).
fn is_special(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let descriptor = |p: &Path| {
        p.starts_with("/proc")
            || p.starts_with("/dev/fd")
            || p == Path::new("/dev/stdout")
            || p == Path::new("/dev/stderr")
    };
    if descriptor(path) || std::fs::read_link(path).is_ok_and(|target| descriptor(&target)) {
        return true;
    }
    std::fs::metadata(path).is_ok_and(|m| {
        let kind = m.file_type();
        kind.is_char_device() || kind.is_block_device() || kind.is_fifo() || kind.is_socket()
    })
}

/// The descriptor of this process that `path` names: `/dev/stdout` (1), `/dev/stderr` (2),
/// `/dev/fd/N` or `/proc/self/fd/N` (N).
fn own_descriptor(path: &Path) -> Option<i32> {
    match path.to_str()? {
        "/dev/stdout" => Some(1),
        "/dev/stderr" => Some(2),
        text => text
            .strip_prefix("/dev/fd/")
            .or_else(|| text.strip_prefix("/proc/self/fd/"))?
            .parse()
            .ok(),
    }
}

/// The regular file a write to `path` replaces: `path`, or the file a link at `path` points
/// to (the link is kept). A link to nothing is refused rather than replaced by a file.
fn regular_target(path: &Path) -> anyhow::Result<PathBuf> {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        return Ok(path.to_path_buf());
    }
    path.canonicalize().with_context(|| {
        format!(
            "{} is a link to {}, which does not exist: write to a file, or make the link's target first",
            path.display(),
            std::fs::read_link(path).unwrap_or_default().display()
        )
    })
}

/// Writes files that belong together: all are written and synced before any is renamed into
/// place, so a failure (a full disk) replaces none of them.
pub fn write_together(files: &[(&Path, &[u8])]) -> anyhow::Result<()> {
    let mut written = Vec::with_capacity(files.len());
    for (path, bytes) in files {
        let mut file = AtomicFile::create(path)?;
        file.writer()
            .write_all(bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.finish()?;
        written.push(file);
    }
    for file in written {
        file.commit()?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: impl AsRef<[u8]>) -> anyhow::Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.writer()
        .write_all(bytes.as_ref())
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.commit()
}

/// Why a temporary could not be made in `parent`, without the temporary's name (tempfile's
/// message names it, and the user never asked for it).
pub fn cannot_create_in(parent: &Path, error: &std::io::Error) -> anyhow::Error {
    let reason = match error.raw_os_error() {
        _ if !parent.exists() => "there is no such directory".to_string(),
        _ if !parent.is_dir() => "it is a file, not a directory".to_string(),
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None => error.kind().to_string(),
    };
    anyhow::anyhow!("cannot create a file in {}: {reason}", parent.display())
}

/// Held while [`publish_dir`] moves directories into place, so a stop on a signal waits for it
/// (`interrupt::exit_removing`) and the user's old directory is never left moved aside; true
/// once the new one is in place.
pub static PUBLISHED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);

/// Where [`publish_dir`] writes `target` before it is published: a hidden sibling of the
/// directory it replaces (through a link, of the link's target, which is replaced and the link
/// kept), and where it moves the old one aside.
pub fn staging_dirs(target: &Path) -> (PathBuf, PathBuf) {
    let target = link_target(target);
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    (
        parent.join(format!(".tmp-{name}")),
        parent.join(format!(".old-{name}")),
    )
}

/// What a link at `path` points to (relative targets from the link's directory), else `path`.
fn link_target(path: &Path) -> PathBuf {
    match std::fs::read_link(path) {
        Ok(pointed) => match path.parent() {
            Some(parent) if pointed.is_relative() => parent.join(pointed),
            _ => pointed,
        },
        Err(_) => path.to_path_buf(),
    }
}

/// Writes a directory whole or not at all: `write` fills a temporary sibling, which then
/// replaces `target` (the old one is renamed aside first and removed last). A `target` that
/// is a link keeps it: the directory it points to is the one replaced.
pub fn publish_dir(target: &Path, write: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let (temp, old) = staging_dirs(target);
    let target = &link_target(target);
    let parent = temp.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    for stale in [&temp, &old] {
        if stale.exists() {
            std::fs::remove_dir_all(stale)
                .with_context(|| format!("cannot remove the leftover {}", stale.display()))?;
        }
    }
    std::fs::create_dir_all(&temp).with_context(|| format!("cannot create {}", temp.display()))?;
    if let Err(error) = write(&temp) {
        let _ = std::fs::remove_dir_all(&temp);
        return Err(error);
    }
    {
        let mut published = PUBLISHED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if target.exists() {
            std::fs::rename(target, &old)
                .with_context(|| format!("cannot move {} aside", target.display()))?;
        }
        if let Err(error) = std::fs::rename(&temp, target) {
            // The old one back where it was.
            if old.exists() {
                let _ = std::fs::rename(&old, target);
            }
            return Err(error).with_context(|| format!("cannot publish {}", target.display()));
        }
        *published = true;
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("cannot remove {}", old.display()))?;
    }
    Ok(())
}

/// Refuses to write `output` when that would replace `input` or part of it: the same file or
/// directory by any spelling, a directory holding it (a replaced directory loses all it
/// held), or a file already inside the input directory. `flag` names the output's option and
/// `input_name` what would be lost, for the message.
pub fn refuse_replacing(output: &Path, flag: &str, input: &Path, input_name: &str) -> anyhow::Result<()> {
    let Ok(input_path) = input.canonicalize() else {
        return Ok(());
    };
    // The output may not exist yet: then it replaces nothing.
    let Ok(output_path) = output.canonicalize() else {
        return Ok(());
    };
    if input_path.starts_with(&output_path) || (input_path.is_dir() && output_path.starts_with(&input_path)) {
        anyhow::bail!(
            "{flag} {} would replace {input_name} {} (or a file in it) that this command reads: choose another {flag} (it would be lost)",
            output.display(),
            input.display()
        );
    }
    Ok(())
}

/// Refuses to write `output` (the option `flag`) over a file that is not one this command
/// wrote before: `is_earlier` is shown the file's start (up to 16 MiB, whole if smaller).
/// A path not there yet, an empty file, a device or a pipe are written; a directory is
/// refused; `what` names the command's outputs ("score output") for the message.
pub fn refuse_replacing_unless(
    output: &Path,
    flag: &str,
    what: &str,
    is_earlier: impl Fn(&[u8]) -> bool,
) -> anyhow::Result<()> {
    use std::io::Read;
    if output.is_dir() {
        anyhow::bail!(
            "{flag} {} is a directory: name the file to write",
            output.display()
        );
    }
    let Ok(metadata) = std::fs::metadata(output) else {
        return Ok(());
    };
    if !metadata.is_file() || metadata.len() == 0 {
        return Ok(());
    }
    let mut start = Vec::new();
    std::fs::File::open(output)
        .and_then(|file| file.take(16 << 20).read_to_end(&mut start))
        .with_context(|| {
            format!(
                "{flag} {}: cannot check it is an earlier {what}",
                output.display()
            )
        })?;
    if !is_earlier(&start) {
        anyhow::bail!(
            "{flag} {} exists and is not an earlier {what}: choose another {flag} (it would be lost)",
            output.display()
        );
    }
    Ok(())
}

/// The first line of `bytes` as JSON, if it is.
pub fn first_line_json(bytes: &[u8]) -> Option<serde_json::Value> {
    let line = bytes.split(|&b| b == b'\n').next()?;
    serde_json::from_slice(line).ok()
}

/// Where `path` points once its links and `..` are resolved, as far as it exists: its longest
/// existing ancestor canonicalized, the rest (a file or directories not made yet) appended.
/// Two outputs with the same `written_path` are one file.
pub fn written_path(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut rest = Vec::new();
    let mut existing = absolute.as_path();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |path, part| path.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// Whether `path` holds something a user may have saved: a file, or a non-empty directory.
pub fn is_occupied(path: &Path) -> bool {
    match std::fs::read_dir(path) {
        Ok(mut entries) => entries.next().is_some(),
        Err(_) => path.exists(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_that_is_or_holds_the_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        std::fs::create_dir(&model).unwrap();
        std::fs::write(model.join("config.json"), "{}").unwrap();
        let same = dir.path().join("./model/../model");
        for output in [&model, &same, &dir.path().to_path_buf()] {
            let error = refuse_replacing(output, "--out", &model, "the base model").unwrap_err();
            assert!(
                error.to_string().contains("would replace the base model"),
                "{error}"
            );
        }
        let config = model.join("config.json");
        assert!(refuse_replacing(&config, "--output", &config, "the input file").is_err());
        // A file already in the input directory is part of it.
        assert!(refuse_replacing(&config, "--out", &model, "the base model").is_err());
        assert!(refuse_replacing(&model.join("new.json"), "--out", &model, "x").is_ok());
        assert_eq!(
            written_path(&dir.path().join("model/../a.json")),
            written_path(&dir.path().join("a.json"))
        );
        // A sibling, or a path not there yet, replaces nothing.
        assert!(refuse_replacing(&dir.path().join("merged"), "--out", &model, "x").is_ok());
        std::fs::create_dir(dir.path().join("merged")).unwrap();
        assert!(refuse_replacing(&dir.path().join("merged"), "--out", &model, "x").is_ok());
    }

    #[test]
    fn a_missing_directory_is_named_without_the_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let error = write(&dir.path().join("no/such/r.html"), "x").unwrap_err();
        let message = format!("{error:#}");
        assert!(
            message.contains("no/such: there is no such directory"),
            "{message}"
        );
        assert!(!message.contains(".tmp-"), "{message}");
    }

    #[test]
    fn the_target_changes_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "old\n").unwrap();
        let mut file = AtomicFile::create(&path).unwrap();
        file.write_line(&serde_json::json!({"a": 1})).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\n");
        drop(file);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "old\n",
            "dropped uncommitted"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
        write(&path, "new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        use std::os::unix::fs::PermissionsExt;
        let fresh = dir.path().join("fresh.txt");
        write(&fresh, "x").unwrap();
        assert_eq!(
            std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }

    #[test]
    fn a_pipe_is_written_through_and_a_link_stays_a_link() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let pipe = dir.path().join("pipe");
        let name = std::ffi::CString::new(pipe.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let reader = {
            let pipe = pipe.clone();
            std::thread::spawn(move || std::fs::read_to_string(pipe).unwrap())
        };
        write(&pipe, "through\n").unwrap();
        assert_eq!(reader.join().unwrap(), "through\n");
        assert!(
            std::fs::metadata(&pipe).unwrap().file_type().is_fifo(),
            "still a pipe"
        );

        let target = dir.path().join("target.jsonl");
        std::fs::write(&target, "old\n").unwrap();
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write(&link, "new\n").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new\n");

        assert_eq!(own_descriptor(Path::new("/dev/stdout")), Some(1));
        assert_eq!(own_descriptor(Path::new("/proc/self/fd/63")), Some(63));
        assert_eq!(own_descriptor(Path::new("/dev/null")), None);
        // A descriptor of this process is written where it stands: appended, not from the start.
        let log = dir.path().join("log.txt");
        std::fs::write(&log, "earlier\n").unwrap();
        let appending = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&appending);
        write(Path::new(&format!("/dev/fd/{fd}")), "more\n").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "earlier\nmore\n");

        let dangling = dir.path().join("dangling.jsonl");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        let error = write(&dangling, "x").unwrap_err().to_string();
        assert!(error.contains("does not exist"), "{error}");
        assert!(std::fs::symlink_metadata(&dangling)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn a_failed_directory_write_leaves_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("model");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("weights"), "trained").unwrap();
        assert!(is_occupied(&target));
        let failed = publish_dir(&target, |temp| {
            std::fs::write(temp.join("weights"), "half")?;
            anyhow::bail!("disk full")
        });
        assert!(failed.is_err());
        assert_eq!(
            std::fs::read_to_string(target.join("weights")).unwrap(),
            "trained"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
        publish_dir(&target, |temp| Ok(std::fs::write(temp.join("weights"), "new")?)).unwrap();
        assert_eq!(std::fs::read_to_string(target.join("weights")).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// Files written together: one that cannot be written leaves every one as it was.
    #[test]
    fn files_written_together_are_all_replaced_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let (train, eval) = (dir.path().join("train.jsonl"), dir.path().join("eval.jsonl"));
        std::fs::write(&train, "old").unwrap();
        let nowhere = dir.path().join("missing/eval.jsonl");
        assert!(write_together(&[(&train, b"new"), (&nowhere, b"new")]).is_err());
        assert_eq!(std::fs::read_to_string(&train).unwrap(), "old");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
        write_together(&[(&train, b"new"), (&eval, b"new")]).unwrap();
        assert_eq!(std::fs::read_to_string(&train).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(&eval).unwrap(), "new");
    }

    /// Through a link, the directory it points to is replaced, beside itself, and the link kept.
    #[test]
    fn a_directory_published_through_a_link_keeps_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let (elsewhere, links) = (dir.path().join("disk"), dir.path().join("links"));
        std::fs::create_dir_all(elsewhere.join("model")).unwrap();
        std::fs::create_dir_all(&links).unwrap();
        std::os::unix::fs::symlink("../disk/model", links.join("model")).unwrap();
        let (staged, _) = staging_dirs(&links.join("model"));
        assert_eq!(staged, links.join("../disk/.tmp-model"));
        publish_dir(&links.join("model"), |temp| {
            Ok(std::fs::write(temp.join("weights"), "new")?)
        })
        .unwrap();
        assert!(std::fs::symlink_metadata(links.join("model"))
            .unwrap()
            .is_symlink());
        assert_eq!(
            std::fs::read_to_string(elsewhere.join("model/weights")).unwrap(),
            "new"
        );
        assert_eq!(
            std::fs::read_dir(&elsewhere).unwrap().count(),
            1,
            "no temporary left"
        );
    }
}
