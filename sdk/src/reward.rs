//! Reward objectives: rule-based scores of completions, the heart of CRPO.
//!
//! A [`RewardPlugin`] is what a library provides (a kind of objective, e.g. a length
//! penalty); [`RewardPlugin::create`] makes a configured [`RewardObjective`] from the options
//! the run config gives it, so one plugin can serve several differently-configured objectives.

use crate::error::{PluginError, Result};
use crate::example::Example;
use crate::PluginInfo;

/// One group of completions of one prompt, scored in one call so an objective can compare
/// completions or amortise per-example work.
#[derive(Debug, Clone, Copy)]
pub struct ScoreRequest<'a> {
    pub example: &'a Example,
    /// The prompt exactly as the policy saw it (after the chat template).
    pub prompt: &'a str,
    /// Decoded completion texts (no prompt).
    pub completions: &'a [&'a str],
    /// The completions' token ids (the policy tokenizer's), one list per completion; empty
    /// when the caller has only texts (`crpo-host score`). Since sdk 1.6.
    pub completion_ids: &'a [Vec<u32>],
}

impl<'a> ScoreRequest<'a> {
    /// A request without token ids.
    pub fn new(example: &'a Example, prompt: &'a str, completions: &'a [&'a str]) -> Self {
        ScoreRequest {
            example,
            prompt,
            completions,
            completion_ids: &[],
        }
    }

    /// The same request with the completions' token ids (one list per completion).
    pub fn with_completion_ids(self, completion_ids: &'a [Vec<u32>]) -> Self {
        ScoreRequest {
            completion_ids,
            ..self
        }
    }
}

/// The score of one completion, with optional named diagnostics (e.g. `boxes = 2`) that
/// `crpo-host score` prints and the trainer averages per step into metrics.jsonl and keeps
/// per completion in samples.jsonl, and optionally the answer the completion gives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Score {
    pub value: f32,
    pub diagnostics: Vec<(String, f32)>,
    /// The answer this completion gives, as the objective reads it (an option key, a label, a
    /// normalised free-text answer); `None` when it gives none or the objective reads none.
    /// Evaluation votes over the answers of the objective named `accuracy` and compares the
    /// vote with the example's gold answer. (Since sdk 1.4.)
    pub answer: Option<String>,
}

impl Score {
    pub fn new(value: f32) -> Self {
        Score {
            value,
            diagnostics: Vec::new(),
            answer: None,
        }
    }

    pub fn with(mut self, name: &str, value: f32) -> Self {
        self.diagnostics.push((name.to_string(), value));
        self
    }

    /// Records the answer the completion gives (see [`Score::answer`]).
    pub fn with_answer(mut self, answer: Option<impl Into<String>>) -> Self {
        self.answer = answer.map(Into::into);
        self
    }
}

impl From<f32> for Score {
    fn from(value: f32) -> Self {
        Score::new(value)
    }
}

/// A configured objective. Must return exactly one finite score per completion; the host
/// checks this and fails the step naming the objective otherwise.
pub trait RewardObjective: Send + Sync {
    fn score_group(&self, request: &ScoreRequest<'_>) -> Result<Vec<Score>>;
}

/// A kind of reward objective, as a library ships it.
pub trait RewardPlugin: Send + Sync {
    fn info(&self) -> PluginInfo;
    /// The weight used when the run config gives none.
    fn default_weight(&self) -> f32 {
        1.0
    }
    /// Whether scoring is fast enough to run inline in the training loop. Return `false` for
    /// an objective that takes long (a model call, a remote check): the trainer then runs it
    /// off the rollout thread. Since sdk 1.1; libraries built on 1.0 report `true`.
    fn is_cheap(&self) -> bool {
        true
    }
    /// Builds the objective from its options (JSON; `null` when the config gives none).
    /// Validate them here, e.g. with [`crate::parse_options`].
    fn create(&self, options: &serde_json::Value) -> Result<Box<dyn RewardObjective>>;
}

/// The host's contract on a group's scores: exactly one finite score per completion. Returns
/// what is wrong, in words, otherwise.
pub fn check_scores(scores: &[Score], completions: usize) -> Result<(), String> {
    if scores.len() != completions {
        return Err(format!(
            "returned {} scores for {completions} completions",
            scores.len()
        ));
    }
    if let Some((i, bad)) = scores.iter().enumerate().find(|(_, s)| !s.value.is_finite()) {
        return Err(format!(
            "returned a non-finite score {} for completion {i}",
            bad.value
        ));
    }
    // A diagnostic is averaged into metrics: a non-finite one was written as null, silently.
    for (i, score) in scores.iter().enumerate() {
        if let Some((name, value)) = score.diagnostics.iter().find(|(_, v)| !v.is_finite()) {
            return Err(format!(
                "returned a non-finite diagnostic `{name}` = {value} for completion {i}"
            ));
        }
    }
    Ok(())
}

/// Scores each completion on its own: the common case, with no state shared across a group.
pub fn score_each(
    request: &ScoreRequest<'_>,
    mut score_one: impl FnMut(&str) -> Score,
) -> Result<Vec<Score>, PluginError> {
    Ok(request.completions.iter().map(|c| score_one(c)).collect())
}

/// DAPO's soft overlong penalty for a completion of `length` (tokens, words, characters: the
/// caller's unit) with budget `max_length`: 0 up to `max_length − buffer`, then falling
/// linearly to −1 at `max_length`, −1 beyond; 0 without a buffer. The one ramp the trainer's
/// `overlong` term and the `length_penalty` objective share.
pub fn overlong_penalty(length: usize, max_length: usize, buffer: usize) -> f32 {
    if buffer == 0 {
        return 0.0;
    }
    let free = max_length.saturating_sub(buffer);
    if length <= free {
        0.0
    } else if length <= max_length {
        (free as f32 - length as f32) / buffer as f32
    } else {
        -1.0
    }
}

#[cfg(test)]
mod tests {
    use super::{check_scores, overlong_penalty, Score};

    #[test]
    fn scores_and_diagnostics_must_be_finite_and_one_per_completion() {
        assert!(check_scores(&[Score::new(1.0).with("d", 0.5)], 1).is_ok());
        assert!(check_scores(&[Score::new(1.0)], 2)
            .unwrap_err()
            .contains("1 scores for 2"));
        assert!(check_scores(&[Score::new(f32::NAN)], 1)
            .unwrap_err()
            .contains("non-finite score"));
        let error =
            check_scores(&[Score::new(1.0), Score::new(0.0).with("d", f32::INFINITY)], 2).unwrap_err();
        assert_eq!(
            error,
            "returned a non-finite diagnostic `d` = inf for completion 1"
        );
    }

    #[test]
    fn overlong_penalty_is_dapos_soft_ramp() {
        assert_eq!(overlong_penalty(100, 128, 0), 0.0);
        assert_eq!(overlong_penalty(96, 128, 32), 0.0);
        assert_eq!(overlong_penalty(112, 128, 32), -0.5);
        assert_eq!(overlong_penalty(128, 128, 32), -1.0);
        assert_eq!(overlong_penalty(140, 128, 32), -1.0);
    }
}
