//! `consistency` (REWARD_RULES §4, the released code's `calculate_english_percentage`).
//!
//! The share of the preprocessed text's characters (code points) that are printable ASCII
//! (U+0020..U+007E) or LF; 0 for empty text. TAB and CR are not allowed.
//! Examples: `"abc"` → 1.0, `"ab中文"` → 0.5, `"a\tb"` → 2/3.

use crate::rule::RuleObjective;
use crpo_sdk::rules::preprocess;
use crpo_sdk::Score;

pub fn consistency(completion: &str) -> f32 {
    let text = preprocess(completion);
    let (mut allowed, mut total) = (0usize, 0usize);
    for c in text.chars() {
        total += 1;
        if matches!(c, '\u{20}'..='\u{7e}' | '\n') {
            allowed += 1;
        }
    }
    if total == 0 {
        0.0
    } else {
        (allowed as f64 / total as f64) as f32
    }
}

pub static CONSISTENCY: RuleObjective = RuleObjective {
    name: "consistency",
    description: "share of characters that are printable ASCII or newline (against language mixing and junk)",
    default_weight: 0.5,
    rule: |_, completion| Ok(Score::new(consistency(completion))),
};
crpo_sdk::register_reward!(CONSISTENCY);

#[cfg(test)]
mod tests {
    use super::consistency;

    #[test]
    fn shares_of_allowed_characters() {
        assert_eq!(consistency("abc"), 1.0);
        assert_eq!(consistency("ab中文"), 0.5, "code points, not bytes");
        assert_eq!(consistency("a\tb"), 2.0 / 3.0, "TAB is not allowed");
        assert_eq!(consistency("a\r\nb"), 0.75, "CR is not allowed, LF is");
        assert_eq!(consistency("é"), 0.0);
    }

    #[test]
    fn empty_and_preprocessed() {
        assert_eq!(consistency(""), 0.0);
        assert_eq!(consistency("   \n "), 0.0, "empty once stripped");
        assert_eq!(consistency("ok<|im_end|>中文中文"), 1.0, "after EOS is ignored");
        assert_eq!(
            consistency("\u{3000}ok\u{3000}"),
            1.0,
            "stripped ideographic spaces do not count"
        );
    }
}
