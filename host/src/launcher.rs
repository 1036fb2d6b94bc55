//! `crpo-host`: starts the runtime (`crpo-host-runtime`, next to this binary) once libtorch is
//! known to load. The runtime links libtorch, so without it the dynamic loader would stop it
//! before `main` with a bare "error while loading shared libraries"; this binary links none
//! of it and can say what is missing and how to fix it.
//!
//! `CRPO_LIBTORCH_DIR` points both at another libtorch lib dir (it is put first on
//! LD_LIBRARY_PATH for the runtime).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Where the build found libtorch (the runtime's rpath).
const BUILT_LIB_DIR: &str = env!("CRPO_TORCH_LIB_DIR");
/// Exit status when libtorch cannot be loaded (as distinct from a command's own failure).
const NO_LIBTORCH: u8 = 3;

fn main() -> ExitCode {
    let override_dir = std::env::var_os("CRPO_LIBTORCH_DIR").map(PathBuf::from);
    let lib_dir = override_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(BUILT_LIB_DIR));
    if let Err(why) = check_libtorch(&lib_dir) {
        eprintln!(
            "error: cannot load libtorch from {}: {why}\n\
             crpo needs torch 2.11.0's libraries there. Run scripts/setup.sh (it installs torch from \
             PyPI), or set CRPO_LIBTORCH_DIR to the lib dir of a torch 2.11.0 installation \
             (python -c \"import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))\").",
            lib_dir.display()
        );
        return ExitCode::from(NO_LIBTORCH);
    }
    let runtime = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name("crpo-host-runtime"),
        Err(err) => {
            eprintln!("error: cannot find this program's path: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut command = Command::new(&runtime);
    command.args(std::env::args_os().skip(1));
    if let Some(dir) = override_dir {
        let mut path = OsString::from(dir.as_os_str());
        if let Some(existing) = std::env::var_os("LD_LIBRARY_PATH").filter(|p| !p.is_empty()) {
            path.push(":");
            path.push(existing);
        }
        command.env("LD_LIBRARY_PATH", path);
    }
    // exec replaces this process: signals, exit status and stdio are the runtime's own.
    let err = command.exec();
    if err.kind() == std::io::ErrorKind::NotFound {
        // A copied `crpo-host` alone: it is this launcher, the work is the runtime's.
        eprintln!(
            "error: cannot start {}: it is not there. crpo-host starts crpo-host-runtime from its own directory: copy both binaries (target/release/crpo-host and target/release/crpo-host-runtime) together",
            runtime.display()
        );
    } else {
        eprintln!("error: cannot start {}: {err}", runtime.display());
    }
    ExitCode::FAILURE
}

/// Loads libtorch's core library, and the CUDA one when present, as the runtime will.
fn check_libtorch(lib_dir: &Path) -> Result<(), String> {
    let cpu = lib_dir.join("libtorch_cpu.so");
    if !cpu.exists() {
        return Err(format!("{} does not exist", cpu.display()));
    }
    let mut libraries = vec![cpu];
    let cuda = lib_dir.join("libtorch_cuda.so");
    if cuda.exists() {
        libraries.push(cuda);
    }
    for library in libraries {
        // SAFETY: libtorch's initialisers only register operators; the library stays loaded
        // until exec replaces the process.
        unsafe { libloading::Library::new(&library) }.map_err(|e| e.to_string())?;
    }
    Ok(())
}
