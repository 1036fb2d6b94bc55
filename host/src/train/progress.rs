//! Console output: progress bars with ETA when stderr is a terminal (hidden otherwise), log
//! lines written around them (never over them), and a summary line every `run.logging_steps`.

use super::metrics::StepMetrics;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::io::Write;
use std::sync::LazyLock;

/// Every bar of the process (training, and evaluation within it), drawn together.
static BARS: LazyLock<MultiProgress> = LazyLock::new(MultiProgress::new);

/// stderr for log lines: each is written with the bars cleared and drawn again after it.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        BARS.suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The `tracing` writer of the binary.
pub fn log_writer() -> LogWriter {
    LogWriter
}

/// A bar of `total` `unit`s (steps, updates, questions), `done` of them already. Its clock
/// ticks every second (a first step can take minutes), and it gives no ETA until this process
/// has finished a unit: the `done` ones came before it (a resume) and say nothing of its rate.
pub fn bar(total: u64, done: u64, label: &str, unit: &str) -> ProgressBar {
    let bar = BARS.add(ProgressBar::new(total));
    let first = format!("after the first {}", unit.strip_suffix('s').unwrap_or(unit));
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit}, {{elapsed}} elapsed, ETA {{eta_once_known}}"
        ))
        .expect("a valid template")
        .with_key(
            "eta_once_known",
            move |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = match state.pos() > done {
                    true => write!(out, "{:#}", indicatif::HumanDuration(state.eta())),
                    false => write!(out, "{first}"),
                };
            },
        )
        .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    bar.set_position(done);
    bar.reset_eta();
    bar.enable_steady_tick(std::time::Duration::from_secs(1));
    bar
}

/// `step 3: reward 4.10 ± 2.3 | accuracy 0.40 consistency 0.97 | kl 0.0012 | 1.9 s`.
pub fn summary_line(record: &StepMetrics) -> String {
    let objectives: Vec<String> = record
        .objectives
        .iter()
        .map(|(name, stats)| format!("{name} {:.3}", stats.mean))
        .collect();
    let kl = record.kl.map(|kl| format!(" | kl {kl:.4}")).unwrap_or_default();
    format!(
        "step {}: reward {:.3} ± {:.3} | {}{kl} | len {:.0} | {:.2} s",
        record.step,
        record.reward.mean,
        record.reward.std,
        objectives.join(" "),
        record.completion_length.mean,
        record.step_time_s,
    )
}

/// Whether step `step` of `total` gets a log line: every `every` steps, and the first and last.
pub fn logs_step(step: usize, total: usize, every: usize) -> bool {
    step == 1 || step == total || (every > 0 && step.is_multiple_of(every))
}
