//! `accuracy` (REWARD_RULES §1, the released code's `calculate_accuracy_reward`).
//!
//! With `n` occurrences of `\boxed` in the preprocessed text: `n != 1` scores `-n`; else the
//! first `\boxed{…}` on one line is read: no such match scores −1, exactly one upper-case
//! ASCII letter scores 1 if it is the gold letter and 0 otherwise, anything else −0.5.
//! Examples (gold `B`): `\boxed{B}` → 1, `\boxed{C}` → 0, `\boxed{b}` → −0.5,
//! `\boxed B` → −1, `\boxed{B} \boxed{B}` → −2, no box → 0.
//!
//! `accuracy_binary` is the paper's (CRPO.md: "1 if the chosen option is the gold option, else
//! 0"): 1 exactly where `accuracy` is 1, else 0, with no penalties. How the released code's
//! penalties combine with the paper's format is not specified (REWARD_RULES §5): the `crpo`
//! preset takes `accuracy`, `crpo-paper` this one.

use crate::rule::RuleObjective;
use crpo_sdk::rules::{boxed_answer, chosen_letter, BoxedAnswer};
use crpo_sdk::{Example, PluginError, Score};

/// The accuracy score of one completion against the gold option letter.
pub fn accuracy(completion: &str, gold: &str) -> f32 {
    match boxed_answer(completion) {
        // No box scores 0, not −0 (which prints as `-0.000`, like a penalty).
        BoxedAnswer::NotOneBox(0) => 0.0,
        BoxedAnswer::NotOneBox(boxes) => -(boxes as f32),
        BoxedAnswer::Unreadable => -1.0,
        BoxedAnswer::Letter(letter) => {
            if gold.len() == 1 && gold.starts_with(letter) {
                1.0
            } else {
                0.0
            }
        }
        BoxedAnswer::NotALetter => -0.5,
    }
}

/// The paper's accuracy: 1 if the single `\boxed{X}` is the gold letter, else 0.
pub fn binary_accuracy(completion: &str, gold: &str) -> f32 {
    if accuracy(completion, gold) == 1.0 {
        1.0
    } else {
        0.0
    }
}

/// `score` against the example's gold letter, carrying the chosen letter as the answer
/// evaluation votes on.
fn scored(example: &Example, completion: &str, score: fn(&str, &str) -> f32) -> Result<Score, PluginError> {
    let gold = example
        .answer
        .as_deref()
        .ok_or_else(|| PluginError::failed(format!("example `{}` has no gold answer", example.id)))?;
    Ok(Score::new(score(completion, gold)).with_answer(chosen_letter(completion).map(String::from)))
}

pub static ACCURACY: RuleObjective = RuleObjective {
    name: "accuracy",
    description: "1 if the single \\boxed{X} is the gold letter, 0 if another letter; -0.5 non-letter, -1 unreadable box, -n for n boxes (n != 1)",
    default_weight: 10.0,
    rule: |example, completion| scored(example, completion, accuracy),
};
crpo_sdk::register_reward!(ACCURACY);

pub static ACCURACY_BINARY: RuleObjective = RuleObjective {
    name: "accuracy_binary",
    description: "the paper's accuracy: 1 if the single \\boxed{X} is the gold letter, else 0 (no penalties)",
    default_weight: 10.0,
    rule: |example, completion| scored(example, completion, binary_accuracy),
};
crpo_sdk::register_reward!(ACCURACY_BINARY);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_score_carries_the_chosen_letter_as_the_answer() {
        let example = crpo_sdk::Example {
            answer: Some("B".into()),
            ..crpo_sdk::Example::default()
        };
        let score = (ACCURACY.rule)(&example, "so \\boxed{C}").unwrap();
        assert_eq!((score.value, score.answer.as_deref()), (0.0, Some("C")));
        assert_eq!((ACCURACY.rule)(&example, "no box").unwrap().answer, None);
    }

    #[test]
    fn correct_and_wrong_letters() {
        assert_eq!(accuracy("<think>x</think><answer>\\boxed{B}</answer>", "B"), 1.0);
        assert_eq!(accuracy("\\boxed{C}", "B"), 0.0);
        assert_eq!(
            accuracy("\\boxed{F}", "B"),
            0.0,
            "any upper-case letter counts as a letter"
        );
    }

    #[test]
    fn box_counts() {
        assert_eq!(accuracy("no box at all", "B"), 0.0);
        assert!(accuracy("no box at all", "B").is_sign_positive(), "0, not −0");
        assert_eq!(accuracy("\\boxed{B} and \\boxed{B}", "B"), -2.0);
        assert_eq!(accuracy("\\boxed{A}\\boxed{B}\\boxed{C}", "B"), -3.0);
        assert_eq!(accuracy("\\boxed", "B"), -1.0, "one box marker without braces");
    }

    #[test]
    fn unreadable_or_non_letter_boxes() {
        assert_eq!(accuracy("\\boxed B", "B"), -1.0);
        assert_eq!(
            accuracy("\\boxed{\nB}", "B"),
            -1.0,
            "'.' does not cross a newline"
        );
        assert_eq!(accuracy("\\boxed{b}", "B"), -0.5, "lower case");
        assert_eq!(accuracy("\\boxed{ B }", "B"), -0.5, "not trimmed");
        assert_eq!(accuracy("\\boxed{}", "B"), -0.5);
        assert_eq!(accuracy("\\boxed{{B}", "B"), -0.5);
        assert_eq!(
            accuracy("\\boxed{Heparin}", "B"),
            -0.5,
            "option text instead of its letter"
        );
        assert_eq!(accuracy("\\boxed{В}", "B"), -0.5, "Cyrillic look-alike");
        assert_eq!(accuracy("\\boxed{Ｂ}", "B"), -0.5, "full-width look-alike");
    }

    #[test]
    fn preprocessing_applies() {
        assert_eq!(
            accuracy("\\boxed{B}<|im_end|>\\boxed{C}", "B"),
            1.0,
            "text after EOS is ignored"
        );
        assert_eq!(accuracy("   \n\\boxed{B}\n  ", "B"), 1.0);
    }

    #[test]
    fn the_paper_s_accuracy_is_one_or_zero() {
        for (completion, expected) in [
            ("\\boxed{B}", 1.0),
            ("\\boxed{C}", 0.0),
            ("\\boxed{b}", 0.0),
            ("\\boxed B", 0.0),
            ("\\boxed{B} \\boxed{B}", 0.0),
            ("no box", 0.0),
            ("\\boxed{B}<|im_end|>\\boxed{C}", 1.0),
        ] {
            assert_eq!(binary_accuracy(completion, "B"), expected, "{completion}");
        }
        let example = crpo_sdk::Example {
            answer: Some("B".into()),
            ..crpo_sdk::Example::default()
        };
        let score = (ACCURACY_BINARY.rule)(&example, "\\boxed{b}").unwrap();
        assert_eq!((score.value, score.answer), (0.0, None));
    }

    #[test]
    fn very_long_output() {
        let long = format!("{}\\boxed{{B}}", "reasoning ".repeat(50_000));
        assert_eq!(accuracy(&long, "B"), 1.0);
    }
}
