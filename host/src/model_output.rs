//! The directory a command writes a model into (`init-model --out`, `merge-lora --out`): it is
//! replaced whole (crate::atomic_file::publish_dir), so it may only be a new directory, an
//! empty one, or — with `--overwrite` — a model directory, never a file, the directory the
//! command runs in, or a directory holding anything a model directory does not.

use anyhow::bail;
use std::path::Path;

/// File names (by extension, or whole) a Hugging Face model or adapter directory holds.
const MODEL_EXTENSIONS: [&str; 9] = [
    "json",
    "safetensors",
    "jinja",
    "txt",
    "model",
    "md",
    "bin",
    "py",
    "tiktoken",
];
const MODEL_FILES: [&str; 3] = [".gitattributes", "LICENSE", "NOTICE"];

fn is_model_file(name: &str) -> bool {
    MODEL_FILES.contains(&name)
        || (!name.starts_with('.')
            && Path::new(name)
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| MODEL_EXTENSIONS.contains(&e)))
}

/// Refuses `out` (the option `flag`) as the model directory a command writes, unless it is new,
/// empty, or with `overwrite` a model directory (config.json or adapter_config.json, and only
/// a model's files beside it).
pub fn check_model_output(out: &Path, flag: &str, overwrite: bool) -> anyhow::Result<()> {
    if out.exists() && !out.is_dir() {
        bail!(
            "{flag} {} is a file: the model is written as a directory",
            out.display()
        );
    }
    let (Ok(target), Ok(here)) = (
        out.canonicalize(),
        std::env::current_dir().and_then(|d| d.canonicalize()),
    ) else {
        return Ok(()); // a new directory
    };
    if here.starts_with(&target) {
        bail!(
            "{flag} {} is the directory this command runs in (or holds it), which cannot be replaced: choose a new directory",
            out.display()
        );
    }
    if !crate::atomic_file::is_occupied(out) {
        return Ok(());
    }
    if !overwrite {
        bail!(
            "{} is not empty: pass --overwrite to replace the model there (it is lost), or choose another {flag}",
            out.display()
        );
    }
    if !out.join("config.json").is_file() && !out.join("adapter_config.json").is_file() {
        bail!(
            "{flag} {} is not a model directory (no config.json or adapter_config.json): --overwrite replaces only a model; choose another {flag}",
            out.display()
        );
    }
    for entry in std::fs::read_dir(out)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if !is_file || !is_model_file(&name) {
            bail!(
                "{flag} {} holds `{name}`, which is not part of a model: --overwrite replaces only a model directory's files, and `{name}` would be lost; move it or choose another {flag}",
                out.display()
            );
        }
    }
    Ok(())
}

/// Writes the model directory `out` whole with `write` (crate::atomic_file::publish_dir),
/// the first SIGINT or SIGTERM removing what was staged (a cut-off model was left hidden).
pub fn write_model_dir(out: &Path, write: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    crate::interrupt::exit_removing(out)?;
    crate::atomic_file::publish_dir(out, write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_empty_or_model_directories_are_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let check = |path: &Path, overwrite: bool| {
            check_model_output(path, "--out", overwrite).map_err(|e| e.to_string())
        };
        assert!(check(&dir.path().join("new"), false).is_ok());
        let model = dir.path().join("model");
        std::fs::create_dir(&model).unwrap();
        assert!(check(&model, false).is_ok(), "empty");
        for file in [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "chat_template.jinja",
            "README.md",
        ] {
            std::fs::write(model.join(file), "x").unwrap();
        }
        assert!(check(&model, false).unwrap_err().contains("--overwrite"));
        assert!(check(&model, true).is_ok());
        std::fs::write(model.join("thesis.tex"), "x").unwrap();
        assert!(check(&model, true).unwrap_err().contains("`thesis.tex`"));
        std::fs::remove_file(model.join("thesis.tex")).unwrap();
        std::fs::create_dir(model.join(".git")).unwrap();
        assert!(check(&model, true).unwrap_err().contains("`.git`"));
        let project = dir.path().join("project");
        std::fs::create_dir_all(project.join("src")).unwrap();
        assert!(check(&project, true)
            .unwrap_err()
            .contains("not a model directory"));
        let file = dir.path().join("notes.txt");
        std::fs::write(&file, "keep").unwrap();
        assert!(check(&file, true).unwrap_err().contains("is a file"));
    }
}
