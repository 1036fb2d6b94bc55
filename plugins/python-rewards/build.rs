//! Records, from the interpreter pyo3 builds against (`PYO3_PYTHON`; `.cargo/config.toml`
//! points it at the set-up venv), where libpython lives and which site-packages to import
//! from, so that the library finds both when the host dlopens it with no environment.

use std::process::Command;

// Real paths: `.python` is a link inside the repository, the venv is not.
const PROBE: &str = "import os, sys, sysconfig; \
print(sysconfig.get_config_var('LIBDIR') or ''); \
print(os.path.realpath(sysconfig.get_paths()['purelib'])); \
print(os.path.realpath(sys.prefix))";

fn main() {
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-changed=build.rs");
    let python = std::env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".into());
    let output = Command::new(&python)
        .args(["-c", PROBE])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} ({e}): run scripts/setup.sh, or set PYO3_PYTHON"));
    assert!(
        output.status.success(),
        "{python} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8 paths");
    let mut lines = text.lines();
    let (libdir, site_packages, prefix) = (
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
    );
    // libpython is rarely on the loader's path (pyenv, venvs of a python built from source).
    if !libdir.is_empty() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{libdir}");
    }
    println!("cargo:rustc-env=CRPO_PYTHON_SITE_PACKAGES={site_packages}");
    println!("cargo:rustc-env=CRPO_PYTHON_PREFIX={prefix}");
}
