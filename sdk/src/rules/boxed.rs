//! The final answer in `\boxed{…}`, read as the paper's accuracy rule reads it
//! (REWARD_RULES §1).

use super::text::preprocess;
use crate::example::AnswerOption;
use regex::Regex;
use std::sync::LazyLock;

static BOXED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\\boxed\{(.*?)\}").unwrap());

/// What the accuracy rule reads from a completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoxedAnswer {
    /// `n` occurrences of `\boxed` (n ≠ 1).
    NotOneBox(usize),
    /// One `\boxed` without a one-line `{…}`.
    Unreadable,
    /// One box holding a single upper-case ASCII letter.
    Letter(char),
    /// One box holding anything else.
    NotALetter,
}

/// Reads a preprocessed completion's boxed answer: `\boxed{B}` is `Letter('B')`,
/// `\boxed{b}` and `\boxed{Heparin}` are `NotALetter`, `\boxed B` is `Unreadable`, two boxes
/// are `NotOneBox(2)`.
pub fn boxed_answer(completion: &str) -> BoxedAnswer {
    let text = preprocess(completion);
    let boxes = text.matches("\\boxed").count();
    if boxes != 1 {
        return BoxedAnswer::NotOneBox(boxes);
    }
    let Some(captured) = BOXED.captures(text).map(|c| c.get(1).map_or("", |m| m.as_str())) else {
        return BoxedAnswer::Unreadable;
    };
    let mut chars = captured.chars();
    match (chars.next(), chars.next()) {
        (Some(letter), None) if letter.is_ascii_uppercase() => BoxedAnswer::Letter(letter),
        _ => BoxedAnswer::NotALetter,
    }
}

/// The option letter a completion answers, if it answers one the way `accuracy` accepts.
pub fn chosen_letter(completion: &str) -> Option<char> {
    match boxed_answer(completion) {
        BoxedAnswer::Letter(letter) => Some(letter),
        _ => None,
    }
}

/// The option (of `options`) whose key the completion's boxed letter is.
pub fn chosen_option<'a>(options: &'a [AnswerOption], completion: &str) -> Option<&'a AnswerOption> {
    let letter = chosen_letter(completion)?;
    options
        .iter()
        .find(|o| o.key.len() == 1 && o.key.starts_with(letter))
}

/// The content of the last `\boxed{…}` of the preprocessed completion, braces balanced (so
/// `\boxed{\frac{1}{2}}` gives `\frac{1}{2}`); `None` without a closed box. For free-text
/// answers, where the accuracy rule's one-letter reading does not apply.
pub fn last_boxed(completion: &str) -> Option<&str> {
    let text = preprocess(completion);
    let start = text.rfind("\\boxed{")? + "\\boxed{".len();
    let mut depth = 1usize;
    for (offset, c) in text[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[start..start + offset]);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_box_of_one_capital_letter() {
        assert_eq!(
            boxed_answer("<answer>\\boxed{B}</answer>"),
            BoxedAnswer::Letter('B')
        );
        assert_eq!(boxed_answer("\\boxed{b}"), BoxedAnswer::NotALetter);
        assert_eq!(boxed_answer("\\boxed{ B }"), BoxedAnswer::NotALetter);
        assert_eq!(boxed_answer("\\boxed B"), BoxedAnswer::Unreadable);
        assert_eq!(boxed_answer("\\boxed{\nB}"), BoxedAnswer::Unreadable);
        assert_eq!(boxed_answer("\\boxed{A}\\boxed{B}"), BoxedAnswer::NotOneBox(2));
        assert_eq!(
            boxed_answer("\\boxed{B}<|im_end|>\\boxed{C}"),
            BoxedAnswer::Letter('B')
        );
    }

    #[test]
    fn the_last_box_with_balanced_braces() {
        assert_eq!(
            last_boxed("\\boxed{1} then \\boxed{\\frac{1}{2}} done"),
            Some("\\frac{1}{2}")
        );
        assert_eq!(last_boxed("\\boxed{ 42 }"), Some(" 42 "));
        assert_eq!(last_boxed("\\boxed{unclosed"), None);
        assert_eq!(last_boxed("no box"), None);
    }

    #[test]
    fn the_chosen_option_is_the_one_with_the_boxed_key() {
        let options = [
            AnswerOption {
                key: "A".into(),
                text: "Aspirin".into(),
            },
            AnswerOption {
                key: "B".into(),
                text: "Heparin".into(),
            },
        ];
        assert_eq!(
            chosen_option(&options, "\\boxed{B}").map(|o| o.text.as_str()),
            Some("Heparin")
        );
        assert_eq!(chosen_option(&options, "\\boxed{C}"), None);
        assert_eq!(chosen_option(&options, "Heparin"), None);
    }
}
