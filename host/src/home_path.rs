//! `~` in a path the user gives, read as a shell reads it: a config's TOML string or a quoted
//! command-line argument (a launcher script's `--output-dir '~/runs/x'`) reaches crpo
//! unexpanded, and taken literally it made a directory named `~` in the working directory —
//! which a user cleaning up with `rm -rf ~` would then lose their home over.

use std::path::{Path, PathBuf};

/// `~` and `~/…` from the home directory (`$HOME`); any other path, and `~user/…`, as given.
pub fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) if !home.is_empty() => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

/// [`expand_home`] as clap's parser of a path argument.
pub fn path_argument(text: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(expand_home(Path::new(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leading_tilde_is_the_home_directory() {
        let home = PathBuf::from(std::env::var_os("HOME").unwrap());
        assert_eq!(expand_home(Path::new("~/runs/x")), home.join("runs/x"));
        assert_eq!(expand_home(Path::new("~")), home);
        for kept in ["runs/~/x", "~other/x", "/abs", "~x"] {
            assert_eq!(expand_home(Path::new(kept)), PathBuf::from(kept));
        }
    }
}
