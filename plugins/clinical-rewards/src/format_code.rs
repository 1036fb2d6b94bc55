//! `format_code` (REWARD_RULES §2, the released code's `calculate_format_reward`).
//!
//! 0 unless the whole preprocessed text is `<think>…</think>` then `<answer>…</answer>`
//! (whitespace between allowed); then 1.5 if the stripped answer holds exactly one
//! `\boxed{…}` and also other text, else 1.0.
//! Examples: `<think>r</think><answer>So \boxed{B}</answer>` → 1.5;
//! `<think>r</think><answer>\boxed{B}</answer>` → 1.0; `<answer>\boxed{B}</answer>` → 0.

use crate::rule::RuleObjective;
use crpo_sdk::rules::{preprocess, python_strip, PY_SPACE};
use crpo_sdk::Score;
use regex::Regex;
use std::sync::LazyLock;

static THINK_ANSWER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?s)\A<think>.*?</think>{PY_SPACE}*<answer>(.*?)</answer>\z"
    ))
    .unwrap()
});
static BOXED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\\boxed\{.*?\}").unwrap());

pub fn format_code(completion: &str) -> f32 {
    let text = preprocess(completion);
    let Some(captures) = THINK_ANSWER.captures(text) else {
        return 0.0;
    };
    let answer = python_strip(captures.get(1).map_or("", |m| m.as_str()));
    let boxes: Vec<&str> = BOXED.find_iter(answer).map(|m| m.as_str()).collect();
    if boxes.len() == 1 && boxes[0] != answer {
        1.5
    } else {
        1.0
    }
}

pub static FORMAT_CODE: RuleObjective = RuleObjective {
    name: "format_code",
    description: "1 for <think>..</think><answer>..</answer>, 1.5 when the answer has one \\boxed{} and a summary; else 0",
    default_weight: 1.0,
    rule: |_, completion| Ok(Score::new(format_code(completion))),
};
crpo_sdk::register_reward!(FORMAT_CODE);

#[cfg(test)]
mod tests {
    use super::format_code;

    #[test]
    fn well_formed() {
        assert_eq!(
            format_code("<think>r</think><answer>So the answer is \\boxed{B}.</answer>"),
            1.5
        );
        assert_eq!(
            format_code("<think>r</think>\n\n<answer>\\boxed{B}</answer>"),
            1.0,
            "box only"
        );
        assert_eq!(
            format_code("<think>r</think><answer>  \\boxed{B}\n </answer>"),
            1.0,
            "box only once stripped"
        );
        assert_eq!(format_code("<think>r</think><answer>B</answer>"), 1.0, "no box");
        assert_eq!(
            format_code("<think>r</think><answer>\\boxed{A} or \\boxed{B}</answer>"),
            1.0,
            "two boxes"
        );
        assert_eq!(
            format_code("<think>r</think>\r\n<answer>x \\boxed{B}</answer>"),
            1.5,
            "CRLF between tags"
        );
    }

    #[test]
    fn malformed() {
        assert_eq!(format_code(""), 0.0);
        assert_eq!(format_code("<answer>\\boxed{B}</answer>"), 0.0, "no think");
        assert_eq!(
            format_code("<answer>x</answer><think>r</think>"),
            0.0,
            "reordered"
        );
        assert_eq!(
            format_code("Sure! <think>r</think><answer>x</answer>"),
            0.0,
            "text before"
        );
        assert_eq!(
            format_code("<think>r</think><answer>x</answer> thanks"),
            0.0,
            "text after"
        );
        assert_eq!(
            format_code("<Think>r</Think><answer>x</answer>"),
            0.0,
            "tags are case-sensitive"
        );
        assert_eq!(
            format_code("<think>r<\\think><answer>x</answer>"),
            0.0,
            "typo is not repaired"
        );
    }

    #[test]
    fn lazy_groups_as_in_python() {
        assert_eq!(
            format_code("<think>a</think><think>b</think><answer>x \\boxed{B}</answer>"),
            1.5
        );
        // With two answer blocks the group runs to the last </answer>: one box plus text.
        assert_eq!(
            format_code("<think>a</think><answer>\\boxed{B}</answer><answer>c</answer>"),
            1.5
        );
        assert_eq!(
            format_code("  <think>a</think><answer>x \\boxed{B}</answer><|im_end|>junk"),
            1.5
        );
    }

    #[test]
    fn box_across_newline_is_not_a_box() {
        assert_eq!(
            format_code("<think>r</think><answer>x \\boxed{\nB}</answer>"),
            1.0
        );
    }
}
