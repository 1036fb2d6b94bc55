//! The run's guard against divergence: a step whose loss or gradients are not finite is
//! skipped (weights and optimizer state untouched, see `update.rs`), and this many in a row
//! mean the run has diverged and stops.

use anyhow::bail;

/// Consecutive skipped steps, against `run.max_nonfinite_steps`.
#[derive(Debug, Clone)]
pub struct NonfiniteStreak {
    limit: usize,
    in_a_row: usize,
}

impl NonfiniteStreak {
    pub fn new(limit: usize) -> Self {
        NonfiniteStreak { limit, in_a_row: 0 }
    }

    /// Records whether step `step` was skipped; fails once `limit` steps in a row were.
    /// `resume_from` names where a restart would begin (the last checkpoint).
    pub fn record(&mut self, step: usize, skipped: bool, resume_from: &str) -> anyhow::Result<()> {
        self.in_a_row = if skipped { self.in_a_row + 1 } else { 0 };
        if self.in_a_row >= self.limit {
            bail!(
                "steps {}-{step}: the loss or gradients were not finite {} steps in a row (run.max_nonfinite_steps): training has diverged; lower algorithm.learning_rate and resume from {resume_from}",
                step + 1 - self.in_a_row,
                self.in_a_row
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_consecutive_skips_stop_the_run() {
        let mut streak = NonfiniteStreak::new(3);
        for (step, skipped) in [(1, true), (2, true), (3, false), (4, true), (5, true)] {
            streak.record(step, skipped, "x").unwrap();
        }
        let err = streak.record(6, true, "step-000003").unwrap_err().to_string();
        assert!(
            err.contains("steps 4-6")
                && err.contains("run.max_nonfinite_steps")
                && err.contains("step-000003"),
            "{err}"
        );
    }
}
