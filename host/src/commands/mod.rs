pub mod bench_rollout;
pub mod data;
pub mod demo;
pub mod demo_data;
pub mod doctor;
pub mod eval;
pub mod merge_lora;
pub mod model;
pub mod new;
pub mod plugins;
pub mod report;
pub mod score;
pub mod train;

/// Refuses a path named twice (`a`, `a/`, `./a`, its absolute path, a link to it): the same
/// run drawn as two, or the same model or data evaluated twice. `kind` and `each` name it.
pub fn refuse_naming_twice(paths: &[std::path::PathBuf], kind: &str, each: &str) -> anyhow::Result<()> {
    let mut seen: Vec<(std::path::PathBuf, &std::path::PathBuf)> = Vec::new();
    for path in paths {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
        if let Some((_, earlier)) = seen.iter().find(|(c, _)| *c == canonical) {
            anyhow::bail!(
                "{} and {} are the same {kind}: name each {each} once",
                earlier.display(),
                path.display()
            );
        }
        seen.push((canonical, path));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_path_named_twice_by_any_spelling_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        std::fs::create_dir(&model).unwrap();
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let twice = [model.clone(), other.clone(), dir.path().join("./model/")];
        let error = super::refuse_naming_twice(&twice, "model directory", "--model")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("are the same model directory: name each --model once"),
            "{error}"
        );
        assert!(super::refuse_naming_twice(&[model, other], "model directory", "--model").is_ok());
    }
}
