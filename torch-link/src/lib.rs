//! Build-script helper for every crate whose binaries link libtorch through tch.
//!
//! torch-sys links libtorch but gives the final binary no rpath, and the linker's default
//! `--as-needed` drops `libtorch_cuda.so` because no symbol of it is referenced directly;
//! tch then silently reports that CUDA is unavailable. [`link_libtorch`] fixes both.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Emits an rpath to libtorch's lib dir and links torch_cuda with `--no-as-needed` when the
/// libtorch found has it, for every target of the crate. Call it from `build.rs`; it panics
/// with a set-up hint otherwise, which is how a build script reports a fatal error.
pub fn link_libtorch() {
    emit_link_args("cargo:rustc-link-arg=");
}

/// [`link_libtorch`] where a crate also has a binary that must start without libtorch (a
/// launcher): the rpath goes to every target (a search path makes no library required, and
/// the lib's unit tests need it), torch_cuda only to the named binaries, tests and benches.
pub fn link_libtorch_for_bins(bins: &[&str]) {
    let lib_dir = lib_dir_or_panic();
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    let mut prefixes: Vec<String> = bins
        .iter()
        .map(|bin| format!("cargo:rustc-link-arg-bin={bin}="))
        .collect();
    prefixes.extend(["tests", "benches"].map(|kind| format!("cargo:rustc-link-arg-{kind}=")));
    for prefix in prefixes {
        emit_cuda_link_args(&prefix, &lib_dir);
    }
}

/// The canonical libtorch lib dir, or a build failure with the set-up hint.
pub fn lib_dir_or_panic() -> PathBuf {
    for var in ["LIBTORCH", "LIBTORCH_LIB", "LIBTORCH_USE_PYTORCH", "VIRTUAL_ENV"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let lib_dir = libtorch_lib_dir()
        .unwrap_or_else(|why| panic!("crpo: cannot find libtorch ({why}); run scripts/setup.sh first"));
    lib_dir.canonicalize().unwrap_or(lib_dir)
}

fn emit_link_args(prefix: &str) {
    let lib_dir = lib_dir_or_panic();
    println!("{prefix}-Wl,-rpath,{}", lib_dir.display());
    emit_cuda_link_args(prefix, &lib_dir);
}

fn emit_cuda_link_args(prefix: &str, lib_dir: &Path) {
    if lib_dir.join("libtorch_cuda.so").exists() {
        println!("{prefix}-L{}", lib_dir.display());
        println!("{prefix}-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}

/// The version of the libtorch in `lib_dir`: `version.py` of a pip-installed torch
/// (`2.11.0+cu130`), or the `build-version` file of a libtorch archive.
pub fn torch_version(lib_dir: &Path) -> Option<String> {
    let root = lib_dir.parent()?;
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        let line = text.lines().find(|l| l.starts_with("__version__"))?;
        let value = line.split_once('=')?.1.trim();
        return Some(value.trim_matches(|c| c == '\'' || c == '"').to_string());
    }
    std::fs::read_to_string(root.join("build-version"))
        .ok()
        .map(|v| v.trim().to_string())
}

/// For a build script: sets `CRPO_BUILT_TORCH_VERSION` for the crate being built, the version of
/// the libtorch it compiles against (`unknown` if it has no version file).
pub fn export_torch_version() {
    let lib_dir = libtorch_lib_dir()
        .unwrap_or_else(|why| panic!("crpo: cannot find libtorch ({why}); run scripts/setup.sh first"));
    let version = torch_version(&lib_dir).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=CRPO_BUILT_TORCH_VERSION={version}");
}

/// The directory holding libtorch.so, found the way torch-sys finds it.
pub fn libtorch_lib_dir() -> Result<PathBuf, String> {
    if env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        return python_torch_lib_dir();
    }
    if let Some(lib) = env::var_os("LIBTORCH_LIB") {
        return Ok(Path::new(&lib).join("lib"));
    }
    match env::var_os("LIBTORCH") {
        Some(root) => Ok(Path::new(&root).join("lib")),
        None => Err("neither LIBTORCH nor LIBTORCH_USE_PYTORCH is set".into()),
    }
}

fn python_torch_lib_dir() -> Result<PathBuf, String> {
    // Same interpreter choice as torch-sys.
    let python = if env::var_os("VIRTUAL_ENV").is_some() {
        "python"
    } else {
        "python3"
    };
    let script = "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))";
    let out = Command::new(python)
        .args(["-c", script])
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{python} cannot import torch"));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pip_version_file() {
        let dir = std::env::temp_dir().join(format!("crpo-torch-link-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("lib")).unwrap();
        std::fs::write(
            dir.join("version.py"),
            "from x import y\n__version__ = '2.11.0+cu130'\ngit = 'a'\n",
        )
        .unwrap();
        assert_eq!(torch_version(&dir.join("lib")).as_deref(), Some("2.11.0+cu130"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
