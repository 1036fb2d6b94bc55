//! `exact_match`: accuracy for free-text answers (a diagnosis, a drug, a dose, a number).
//!
//! The completion's answer is its last `\boxed{…}`, else its last `<answer>…</answer>`
//! (`crpo_sdk::rules::free_text_answer`). It scores 1 when it is the gold answer — numbers
//! compared as numbers within `tolerance` (relative to the gold; absolute for a gold of 0; unset,
//! 1e-6 of the gold, and no more than 1e-6 for a whole gold: a count one off is wrong), anything
//! else as normalised text (case, spaces, quotes, final punctuation) — and 0 otherwise or
//! without an answer. Its answer for evaluation is the gold text when it matches (so that
//! `42.0` and `42` vote together and count as right), else the normalised answer.
//! Gold `42`: `\boxed{42.0}` → 1, `\boxed{41}` → 0, `the answer is 42` → 0 (not stated).

use crpo_sdk::rules::{free_text_answer, normalise_answer, parse_number, same_answer};
use crpo_sdk::{Example, PluginError, RewardFn, Score};
use serde::{Deserialize, Deserializer};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExactMatchOptions {
    /// How far a number may be from the gold, relative to the gold (absolute for a gold of 0).
    /// Unset: [`DEFAULT_TOLERANCE`], and whole numbers compare exactly.
    #[serde(deserialize_with = "non_negative")]
    pub tolerance: Option<f64>,
}

/// The tolerance when none is set: room for how a number is written or rounded (`0.1` as
/// `0.1000000001`), relative to the gold — but for a whole gold at most this much in all, so
/// that `1000001` (or `1000000.9`) is not `1000000`, as math_verify, which rounds to six
/// decimals, does not take them for it either.
pub const DEFAULT_TOLERANCE: f64 = 1e-6;

impl ExactMatchOptions {
    /// The relative tolerance an answer is compared to `gold` with: the one set, else
    /// [`DEFAULT_TOLERANCE`] of the gold, or of 1 for a whole gold. (Beyond 2^53 numbers are
    /// compared as f64 holds them.)
    fn tolerance_for(&self, gold: &str) -> f64 {
        match (self.tolerance, parse_number(gold)) {
            (Some(set), _) => set,
            (None, Some(whole)) if whole.fract() == 0.0 && whole.abs() > 1.0 => {
                DEFAULT_TOLERANCE / whole.abs()
            }
            (None, _) => DEFAULT_TOLERANCE,
        }
    }
}

/// Refused when the run starts (the error names `tolerance`), not at the first score.
fn non_negative<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    let value = f64::deserialize(deserializer)?;
    if value >= 0.0 && value.is_finite() {
        Ok(Some(value))
    } else {
        Err(serde::de::Error::custom(format!(
            "{value}: must be a finite number ≥ 0"
        )))
    }
}

pub fn exact_match(
    example: &Example,
    completion: &str,
    options: &ExactMatchOptions,
) -> Result<Score, PluginError> {
    let gold = example
        .answer
        .as_deref()
        .ok_or_else(|| PluginError::failed(format!("example `{}` has no gold answer", example.id)))?;
    let Some(answer) = free_text_answer(completion) else {
        return Ok(Score::new(0.0).with("answered", 0.0));
    };
    let right = same_answer(answer, gold, options.tolerance_for(gold));
    let voted = if right {
        gold.to_string()
    } else {
        normalise_answer(answer)
    };
    Ok(Score::new(if right { 1.0 } else { 0.0 })
        .with("answered", 1.0)
        .with_answer(Some(voted)))
}

type ExactMatchFn = fn(&Example, &str, &ExactMatchOptions) -> Result<Score, PluginError>;

pub static EXACT_MATCH: RewardFn<ExactMatchOptions, ExactMatchFn> = RewardFn::new(
        "exact_match",
        env!("CARGO_PKG_VERSION"),
        "free-text accuracy: 1 if the last \\boxed{} (or <answer>) is the gold answer (numbers compared as numbers, text normalised), else 0",
        exact_match,
    );
crpo_sdk::register_reward!(EXACT_MATCH);

#[cfg(test)]
mod tests {
    use super::*;
    use crpo_sdk::testing::score_one;
    use crpo_sdk::RewardPlugin;
    use serde_json::json;

    fn example(gold: &str) -> Example {
        Example {
            id: "q".into(),
            answer: Some(gold.into()),
            ..Example::default()
        }
    }

    fn score(gold: &str, completion: &str) -> Score {
        score_one(&EXACT_MATCH, &json!(null), &example(gold), completion).unwrap()
    }

    #[test]
    fn numbers_and_text() {
        assert_eq!(score("42", "<answer>\\boxed{42.0}</answer>").value, 1.0);
        assert_eq!(
            score("42", "\\boxed{42.0}").answer.as_deref(),
            Some("42"),
            "votes as the gold"
        );
        assert_eq!(score("42", "\\boxed{41}").value, 0.0);
        assert_eq!(score("42", "the answer is 42").value, 0.0);
        assert_eq!(score("42", "the answer is 42").answer, None);
        assert_eq!(score("Warfarin", "<answer>warfarin.</answer>").value, 1.0);
        assert_eq!(
            score("Warfarin", "\\boxed{Heparin}").answer.as_deref(),
            Some("heparin")
        );
    }

    /// At the default, 1e-6 of a million was one unit: a count one off matched.
    #[test]
    fn a_whole_gold_allows_no_unit_off_unless_a_tolerance_is_set() {
        assert_eq!(score("1000000", "\\boxed{1000001}").value, 0.0);
        assert_eq!(score("1000000", "\\boxed{1000000.9}").value, 0.0);
        assert_eq!(score("-5000000", "\\boxed{-5000003}").value, 0.0);
        assert_eq!(score("1000000", "\\boxed{1,000,000}").value, 1.0);
        assert_eq!(score("1000000", "\\boxed{1e6}").value, 1.0);
        assert_eq!(score("1000000", "\\boxed{1000000.0000001}").value, 1.0);
        // Room for rounding stays, relative to a decimal gold.
        assert_eq!(score("2", "\\boxed{2.0000000001}").value, 1.0);
        assert_eq!(score("0.3", "\\boxed{0.30000000001}").value, 1.0);
        assert_eq!(score("123456.5", "\\boxed{123456.6}").value, 1.0);
    }

    #[test]
    fn tolerance_is_an_option() {
        let loose = score_one(
            &EXACT_MATCH,
            &json!({"tolerance": 0.01}),
            &example("100"),
            "\\boxed{100.5}",
        );
        assert_eq!(loose.unwrap().value, 1.0);
        // A tolerance set applies to whole numbers too (a dose of 500 mg within 1%).
        let dose = score_one(
            &EXACT_MATCH,
            &json!({"tolerance": 0.01}),
            &example("500"),
            "\\boxed{504}",
        );
        assert_eq!(dose.unwrap().value, 1.0);
        // Refused when the objective is made, before any scoring.
        let bad = EXACT_MATCH.create(&json!({"tolerance": -1.0})).err().unwrap();
        assert!(matches!(bad, PluginError::InvalidOption { ref option, .. } if option == "tolerance"));
        let unknown = score_one(&EXACT_MATCH, &json!({"tol": 1.0}), &example("1"), "\\boxed{1}");
        assert!(matches!(unknown, Err(PluginError::InvalidOption { ref option, .. }) if option == "tol"));
    }

    #[test]
    fn an_example_without_gold_is_an_error_naming_it() {
        let none = Example {
            id: "data.jsonl:7".into(),
            ..Example::default()
        };
        let error = score_one(&EXACT_MATCH, &json!(null), &none, "\\boxed{1}").unwrap_err();
        assert!(error.to_string().contains("data.jsonl:7"), "{error}");
    }
}
