//! Which plugin libraries may run, decided before any of their code does (dlopen runs a
//! library's constructors): the same directory once, no symlink leading out of its directory,
//! no file or directory others can write to, and, with pins, only libraries whose sha256 is
//! pinned by file name.

use super::PluginLoadError;
use crate::train::config::PluginPin;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What the run trusts: `run.plugin_pins` and `run.allow_insecure_plugins`.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub pins: Vec<PluginPin>,
    pub allow_insecure: bool,
}

impl Trust {
    /// Refuses `library` (found in `dir`) unless it may be loaded; checked before dlopen.
    pub fn check_library(&self, dir: &Path, library: &Path) -> Result<(), PluginLoadError> {
        let refuse = |reason: String| PluginLoadError::Library {
            path: library.to_path_buf(),
            reason,
        };
        let real = std::fs::canonicalize(library).map_err(|e| refuse(format!("cannot resolve it: {e}")))?;
        let real_dir =
            std::fs::canonicalize(dir).map_err(|e| refuse(format!("cannot resolve its directory: {e}")))?;
        if !real.starts_with(&real_dir) {
            return Err(refuse(format!(
                "it is a link to {}, outside the plugin directory {}: copy the library into the directory instead",
                real.display(),
                dir.display()
            )));
        }
        if !self.allow_insecure {
            insecure(&real).map_err(refuse)?;
            // A link may lead into a subdirectory: whoever can write there can swap the file.
            let mut parent = real.parent();
            while let Some(dir) = parent.filter(|dir| *dir != real_dir) {
                insecure(dir).map_err(refuse)?;
                parent = dir.parent();
            }
        }
        if !self.pins.is_empty() {
            let name = library
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let Some(pin) = self.pins.iter().find(|p| p.file == name) else {
                return Err(refuse(format!(
                    "it is not pinned: run.plugin_pins names only {}; `crpo-host plugins --verify` prints a pin to add",
                    self.pins.iter().map(|p| p.file.as_str()).collect::<Vec<_>>().join(", ")
                )));
            };
            let actual = sha256_of(library).map_err(|e| refuse(format!("cannot read it: {e}")))?;
            if !pin.sha256.eq_ignore_ascii_case(&actual) {
                return Err(refuse(format!(
                    "its sha256 is {actual}, but run.plugin_pins pins {}: the file changed since it was pinned (not loaded)",
                    pin.sha256
                )));
            }
        }
        Ok(())
    }

    /// Refuses a plugin directory others can write to (anyone could drop a library in).
    pub fn check_directory(&self, dir: &Path) -> Result<(), PluginLoadError> {
        if self.allow_insecure {
            return Ok(());
        }
        let real = std::fs::canonicalize(dir).map_err(|error| PluginLoadError::Directory {
            dir: dir.to_path_buf(),
            error,
        })?;
        insecure(&real).map_err(|reason| PluginLoadError::UnsafeDirectory {
            dir: dir.to_path_buf(),
            reason,
        })
    }
}

/// Why a file or directory is unsafe to load code from, if it is: writable by everyone, or
/// owned by another user than this one and root.
fn insecure(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
    if meta.mode() & 0o002 != 0 {
        return Err(format!(
            "{} is writable by every user (mode {:o}): anyone could replace the code it loads; `chmod o-w` it, or set run.allow_insecure_plugins = true",
            path.display(),
            meta.mode() & 0o7777
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!(
            "{} belongs to another user (uid {}, this process runs as {me}); set run.allow_insecure_plugins = true to load it anyway",
            path.display(),
            meta.uid()
        ));
    }
    Ok(())
}

/// The file's sha256, lowercase hex.
pub fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// `dirs` with each directory once, however it was named (`d`, `./d/`, a link to it); the
/// first naming is kept. A directory that cannot be resolved is kept (its error comes when
/// it is read).
pub fn distinct_dirs(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut seen = BTreeSet::new();
    dirs.iter()
        .filter(|dir| seen.insert(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_directory_named_twice_is_kept_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        std::fs::create_dir(&d).unwrap();
        let dotted = dir.path().join("./d/");
        let other = dir.path().join("e");
        std::fs::create_dir(&other).unwrap();
        assert_eq!(
            distinct_dirs(&[d.clone(), dotted, other.clone(), d.clone()]),
            vec![d, other]
        );
    }

    #[test]
    fn pins_links_and_permissions_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        let library = plugins.join("libx.so");
        std::fs::write(&library, b"not really a library").unwrap();
        let hash = sha256_of(&library).unwrap();
        let pinned = |sha256: &str| Trust {
            pins: vec![PluginPin {
                file: "libx.so".into(),
                sha256: sha256.into(),
            }],
            allow_insecure: false,
        };
        pinned(&hash).check_library(&plugins, &library).unwrap();
        let err = pinned(&"0".repeat(64))
            .check_library(&plugins, &library)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&hash) && err.contains("pins"), "{err}");
        let unpinned = Trust {
            pins: vec![PluginPin {
                file: "liby.so".into(),
                sha256: hash.clone(),
            }],
            allow_insecure: false,
        };
        assert!(unpinned
            .check_library(&plugins, &library)
            .unwrap_err()
            .to_string()
            .contains("not pinned"));

        let outside = dir.path().join("libz.so");
        std::fs::write(&outside, b"z").unwrap();
        let link = plugins.join("libz.so");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let err = Trust::default()
            .check_library(&plugins, &link)
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside the plugin directory"), "{err}");

        // A link to a library in a subdirectory everyone can write to.
        let sub = plugins.join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("libw.so"), b"w").unwrap();
        std::os::unix::fs::symlink("sub/libw.so", plugins.join("libw.so")).unwrap();
        Trust::default()
            .check_library(&plugins, &plugins.join("libw.so"))
            .unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = Trust::default()
            .check_library(&plugins, &plugins.join("libw.so"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sub is writable by every user"), "{err}");

        std::fs::set_permissions(&library, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = Trust::default()
            .check_library(&plugins, &library)
            .unwrap_err()
            .to_string();
        assert!(err.contains("writable by every user"), "{err}");
        let allowed = Trust {
            allow_insecure: true,
            ..Trust::default()
        };
        allowed.check_library(&plugins, &library).unwrap();
        std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o777)).unwrap();
        let refused = Trust::default()
            .check_directory(&plugins)
            .unwrap_err()
            .to_string();
        assert!(refused.starts_with("plugin directory "), "{refused}");
        allowed.check_directory(&plugins).unwrap();
    }
}
