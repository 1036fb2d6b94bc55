//! SIGTERM and SIGINT (SLURM preemption, Ctrl-C) during training: the first asks the run to
//! finish its step, write a checkpoint and exit non-zero; a second exits at once. A command
//! with nothing to finish (the demo) says what to do next and exits at once.

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The installed handlers' flag, for code that waits on something else (a reward worker) and
/// should stop waiting once a stop is asked for.
static STOP_REQUESTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Whether SIGTERM or SIGINT was received since [`Interrupt::install`].
pub fn stop_requested() -> bool {
    STOP_REQUESTED
        .get()
        .is_some_and(|flag| flag.load(Ordering::SeqCst))
}

/// The signals a run listens for, once installed.
#[derive(Clone)]
pub struct Interrupt {
    requested: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
}

impl Interrupt {
    /// Installs the handlers: from now on the first SIGTERM or SIGINT is recorded here and a
    /// second one ends the process with status 128 + signal.
    /// `checkpoints`: whether the run writes a checkpoint when it stops (run.save_steps > 0),
    /// as the first signal's message says.
    pub fn install(checkpoints: bool) -> anyhow::Result<Self> {
        let interrupt = Interrupt {
            requested: Arc::new(AtomicBool::new(false)),
            signal: Arc::new(AtomicUsize::new(0)),
        };
        for signal in [SIGTERM, SIGINT] {
            // Registered first, so they see the flag as the previous signal left it.
            say_what_a_signal_does(signal, checkpoints, Arc::clone(&interrupt.requested))?;
            flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(&interrupt.requested))?;
            flag::register_usize(signal, Arc::clone(&interrupt.signal), signal as usize)?;
            flag::register(signal, Arc::clone(&interrupt.requested))?;
        }
        let _ = STOP_REQUESTED.set(Arc::clone(&interrupt.requested));
        Ok(interrupt)
    }

    /// The signal received, if one was.
    pub fn received(&self) -> Option<i32> {
        self.requested
            .load(Ordering::SeqCst)
            .then(|| self.signal.load(Ordering::SeqCst) as i32)
    }
}

/// Writes to standard error what `signal` does now: the first finishes the step (which may
/// wait on a slow objective or a hung plugin, so the user knows a second one is the way
/// out), a second stops at once without a checkpoint of the step.
fn say_what_a_signal_does(signal: i32, checkpoints: bool, requested: Arc<AtomicBool>) -> anyhow::Result<()> {
    let name = Interrupted::name(signal);
    let first = if checkpoints {
        format!(
            "\n{name} received: the run stops after the step in progress, writing a checkpoint (send {name} again to stop at once, without it)\n"
        )
    } else {
        format!(
            "\n{name} received: the run stops after the step in progress (run.save_steps = 0: no checkpoint is written; send {name} again to stop at once)\n"
        )
    }
    .into_bytes();
    let second =
        format!("\n{name} received again: stopping at once; the step in progress is not checkpointed\n")
            .into_bytes();
    let handler = move || {
        let text = if requested.load(Ordering::SeqCst) {
            &second
        } else {
            &first
        };
        // SAFETY: write(2) is async-signal-safe; the texts were made before the handler was
        // installed and are only read here.
        unsafe {
            libc::write(2, text.as_ptr().cast(), text.len());
        }
    };
    // SAFETY: the handler only loads an atomic and calls write(2) (above).
    unsafe { signal_hook::low_level::register(signal, handler) }?;
    Ok(())
}

/// For a command that needs no clean-up (each file it writes is written whole): the first
/// SIGINT or SIGTERM prints `error: stopped by SIGNAL: {next}` and ends the process at once
/// with 128 + signal, as the default action does, but saying what to do next.
pub fn exit_saying(next: &str) -> anyhow::Result<()> {
    for signal in [SIGINT, SIGTERM] {
        let text = format!("\nerror: stopped by {}: {next}\n", Interrupted::name(signal)).into_bytes();
        let handler = move || {
            // SAFETY: write(2) and _exit(2) are async-signal-safe; `text` was made before the
            // handler was installed and is only read here.
            unsafe {
                libc::write(2, text.as_ptr().cast(), text.len());
                libc::_exit(128 + signal);
            }
        };
        // SAFETY: the handler only calls async-signal-safe functions (above).
        unsafe { signal_hook::low_level::register(signal, handler) }?;
    }
    Ok(())
}

/// For a command that writes the directory `out` through `atomic_file::publish_dir`: the
/// first SIGINT or SIGTERM, once no directory is being moved into place, removes what was
/// staged (it held a half-written model) and ends the process with 128 + signal, saying
/// whether `out` was written.
pub fn exit_removing(out: &std::path::Path) -> anyhow::Result<()> {
    let (staged, old) = crate::atomic_file::staging_dirs(out);
    let out = out.display().to_string();
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("stop-removing".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let published = crate::atomic_file::PUBLISHED
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let name = Interrupted::name(signal);
                if *published {
                    eprintln!(
                        "\nerror: stopped by {name} after {out} was written (its old copy may be left as {}; the next write removes it)",
                        old.display()
                    );
                } else {
                    // Moved away first: files the main thread still creates then fail instead
                    // of refilling the directory being removed.
                    let trash = staged.with_extension("stopped");
                    let removing = if std::fs::rename(&staged, &trash).is_ok() { &trash } else { &staged };
                    let _ = std::fs::remove_dir_all(removing);
                    eprintln!("\nerror: stopped by {name}: {out} was not written (nothing half-written is left)");
                }
                // SAFETY: ends the process now, as the signal's default action would; the main
                // thread may be mid-write, so exit handlers are not run under it.
                unsafe { libc::_exit(128 + signal) };
            }
        })?;
    Ok(())
}

/// The error a run ends with after a signal: the process exits with 128 + `signal`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Interrupted {
    pub signal: i32,
    pub message: String,
}

impl Interrupted {
    /// A run stopped by `signal` after `step` (e.g. "step 12", "sft step 40"); `checkpointed`
    /// says whether a checkpoint was written (run.save_steps > 0).
    pub fn after(signal: i32, step: &str, checkpointed: bool) -> Self {
        Interrupted {
            signal,
            message: format!(
                "stopped by {} after {step}: {}",
                Self::name(signal),
                if checkpointed {
                    "checkpoint written; continue with --resume"
                } else {
                    "run.save_steps = 0, so no checkpoint was written"
                }
            ),
        }
    }

    /// A rank other than 0 stopped by `signal` after `step`: rank 0 writes the checkpoints.
    pub fn on_rank(signal: i32, step: &str, rank: usize) -> Self {
        Interrupted {
            signal,
            message: format!(
                "rank {rank} stopped by {} after {step} (rank 0 writes the checkpoint, and says whether it did)",
                Self::name(signal)
            ),
        }
    }

    pub fn name(signal: i32) -> &'static str {
        match signal {
            SIGTERM => "SIGTERM",
            SIGINT => "SIGINT",
            _ => "a signal",
        }
    }
}
