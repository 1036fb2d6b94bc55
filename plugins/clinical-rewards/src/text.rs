//! Text helpers that reproduce Python's semantics where the released reward code relies on them.

/// Python's `str.isspace()`: Rust's `char::is_whitespace` plus U+001C..U+001F, which Python
/// also counts as whitespace (REWARD_RULES §0).
pub fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
pub fn python_strip(s: &str) -> &str {
    s.trim_matches(is_python_space)
}

/// The pattern for Python's `\s` in `re` (a `str` pattern), for use inside regexes.
pub const PY_SPACE: &str = r"[\s\x1C-\x1F]";

/// REWARD_RULES §0: cut at the first `<|im_end|>`, then strip.
pub fn preprocess(completion: &str) -> &str {
    let cut = completion.split("<|im_end|>").next().unwrap_or(completion);
    python_strip(cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_like_python_including_separators() {
        assert_eq!(python_strip("\u{1c}\u{a0} x y \u{3000}\n"), "x y");
        assert_eq!(
            python_strip("\u{200b}x"),
            "\u{200b}x",
            "ZERO WIDTH SPACE is not whitespace"
        );
    }

    #[test]
    fn preprocess_cuts_at_first_eos_then_strips() {
        assert_eq!(preprocess("  answer <|im_end|> junk <|im_end|>"), "answer");
        assert_eq!(preprocess("no eos\n"), "no eos");
        assert_eq!(preprocess("<|im_end|>after"), "");
    }
}
