//! Build-script helper for every crate whose binaries link libtorch through tch.
//!
//! torch-sys links libtorch but gives the final binary no rpath, and the linker's default
//! `--as-needed` drops `libtorch_cuda.so` because no symbol of it is referenced directly;
//! tch then silently reports that CUDA is unavailable. [`link_libtorch`] fixes both.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Emits an rpath to libtorch's lib dir and links torch_cuda with `--no-as-needed` when the
/// libtorch found has it. Call it from `build.rs`; it panics with a set-up hint otherwise,
/// which is how a build script reports a fatal error.
pub fn link_libtorch() {
    for var in ["LIBTORCH", "LIBTORCH_LIB", "LIBTORCH_USE_PYTORCH", "VIRTUAL_ENV"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let lib_dir = libtorch_lib_dir()
        .unwrap_or_else(|why| panic!("crpo: cannot find libtorch ({why}); run scripts/setup.sh first"));
    let lib_dir = lib_dir.canonicalize().unwrap_or(lib_dir);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    if lib_dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-L{}", lib_dir.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}

/// The directory holding libtorch.so, found the way torch-sys finds it.
fn libtorch_lib_dir() -> Result<PathBuf, String> {
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
