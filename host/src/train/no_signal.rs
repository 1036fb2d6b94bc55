//! A run that learns nothing from its start: every group's rewards tie step after step, so
//! every advantage is 0 and the loss and gradients are 0 — a run that goes on for hours
//! without a word. TRL warns when every reward function returned None; crpo warns whatever
//! made the groups tie, once, after the run's first steps.

/// Fully tied steps from the start before the warning (fewer when the run is shorter).
pub const STEPS: usize = 5;

/// Watches a run's first steps (a resumed run's are not its first).
#[derive(Debug, Clone)]
pub struct NoSignalWatch {
    watching: bool,
    tied: usize,
    needed: usize,
}

impl NoSignalWatch {
    /// For a run at `start_step` (0 when fresh) of `max_steps`; `totals_decide`: a group
    /// whose rewards tie has no advantages (not under `normalize_then_sum`, which normalises
    /// each objective in its group before the sum).
    pub fn new(start_step: usize, max_steps: usize, totals_decide: bool) -> Self {
        NoSignalWatch {
            watching: start_step == 0 && totals_decide,
            tied: 0,
            needed: STEPS.min(max_steps).max(1),
        }
    }

    /// Records step `step`'s share of tied groups; the warning, once it is due.
    pub fn record(&mut self, step: usize, frac_reward_zero_std: f64) -> Option<String> {
        if !self.watching {
            return None;
        }
        if frac_reward_zero_std < 1.0 {
            self.watching = false;
            return None;
        }
        self.tied += 1;
        if self.tied < self.needed {
            return None;
        }
        self.watching = false;
        Some(format!(
            "steps 1-{step}: the rewards of every group tied (frac_reward_zero_std = 1), so no completion was preferred to another and nothing was learned: a group's completions may all be alike (a very low algorithm.temperature or top_p), or every objective gives every completion one score (a constant, or None from a Python reward function)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_fresh_run_tied_from_its_first_step_is_warned_once() {
        let mut watch = NoSignalWatch::new(0, 100, true);
        for step in 1..STEPS {
            assert_eq!(watch.record(step, 1.0), None);
        }
        assert!(watch.record(STEPS, 1.0).unwrap().starts_with("steps 1-5:"));
        assert_eq!(watch.record(STEPS + 1, 1.0), None, "once");
        let mut learning = NoSignalWatch::new(0, 100, true);
        assert_eq!(learning.record(1, 0.5), None);
        assert!(
            (2..20).all(|step| learning.record(step, 1.0).is_none()),
            "it learned at first"
        );
        let mut resumed = NoSignalWatch::new(40, 100, true);
        assert!((41..60).all(|step| resumed.record(step, 1.0).is_none()));
        let mut resumed = NoSignalWatch::new(0, 100, false);
        assert!((41..60).all(|step| resumed.record(step, 1.0).is_none()));
        let mut short = NoSignalWatch::new(0, 2, true);
        assert_eq!(short.record(1, 1.0), None);
        assert!(short.record(2, 1.0).is_some());
    }
}
