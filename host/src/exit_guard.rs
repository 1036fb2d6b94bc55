//! A command ends by returning from `main`. A plugin (or a library it loads) that calls
//! `exit()` instead ends the process in the middle of a step or a write, with its status
//! (often 0): a run that stopped mid-step read as success, and `score` wrote nothing.
//! An `atexit` handler says so and makes the status 1 unless the command finished.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static FINISHED: AtomicBool = AtomicBool::new(false);
static COMMAND: OnceLock<String> = OnceLock::new();

/// From now on, an exit before [`finished`] is reported as one `command` did not make.
pub fn install(command: &str) {
    let _ = COMMAND.set(command.to_string());
    // SAFETY: registers a plain function; it runs at exit, in the exiting thread.
    unsafe {
        libc::atexit(on_exit);
    }
}

/// The command has ended (its result, or a panic, already reported): the exit is its own.
pub fn finished() {
    FINISHED.store(true, Ordering::SeqCst);
}

extern "C" fn on_exit() {
    if FINISHED.load(Ordering::SeqCst) {
        return;
    }
    let command = COMMAND.get().map_or("the command", String::as_str);
    eprintln!(
        "error: the process was ended by a call to exit() before `{command}` finished: a plugin (or a library it loads) called it; what the command had not written yet was not written (run the objective with isolation = \"process\" to contain it)"
    );
    // SAFETY: ends the process at once with a failure status; the other exit handlers are
    // skipped, as the process was already ending.
    unsafe { libc::_exit(1) }
}
