//! Text rules that reproduce Python's semantics where the paper's released reward code relies
//! on them (REWARD_RULES §0), and naming a phrase as a whole word.

use regex::Regex;
use std::borrow::Cow;
use std::sync::LazyLock;

/// The pattern for Python's `\s` in `re` (a `str` pattern), for use inside regexes.
pub const PY_SPACE: &str = r"[\s\x1C-\x1F]";

static WHITESPACE_RUN: LazyLock<Regex> = LazyLock::new(|| Regex::new(&format!("{PY_SPACE}+")).unwrap());

/// Python's `str.isspace()`: Rust's `char::is_whitespace` plus U+001C..U+001F, which Python
/// also counts as whitespace.
pub fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
pub fn python_strip(s: &str) -> &str {
    s.trim_matches(is_python_space)
}

/// The completion every built-in objective reads: cut at the first `<|im_end|>`, then
/// stripped (REWARD_RULES §0). `preprocess(" x <|im_end|> y")` is `"x"`.
pub fn preprocess(completion: &str) -> &str {
    let cut = completion.split("<|im_end|>").next().unwrap_or(completion);
    python_strip(cut)
}

/// Lower case, every whitespace run collapsed to one space (the rules' `norm(x)`).
pub fn normalise(text: &str) -> String {
    WHITESPACE_RUN.replace_all(&text.to_lowercase(), " ").into_owned()
}

/// `text` as [`normalise`] gives it, borrowed when it is already so (the clauses of
/// [`super::clauses`] are): callers that may get either skip the copy.
pub fn normalised(text: &str) -> Cow<'_, str> {
    let mut after_space = false;
    let already = text.chars().all(|c| {
        let fine = if is_python_space(c) {
            c == ' ' && !after_space
        } else {
            let mut lower = c.to_lowercase();
            lower.next() == Some(c) && lower.next().is_none()
        };
        after_space = is_python_space(c);
        fine
    });
    if already {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(normalise(text))
    }
}

/// Whether `phrase` (e.g. an option's text) occurs in `text` as a whole word, both
/// normalised: with no ASCII letter or digit either side, so `Pneumonia` is named in
/// `Likely PNEUMONIA.` but not in `bronchopneumonia`. A blank phrase names nothing.
pub fn is_named(phrase: &str, text: &str) -> bool {
    is_named_in_normalised(phrase, &normalise(text))
}

/// [`is_named`] over a `segment` already [`normalise`]d: for a caller that looks for several
/// phrases in one text and normalises it once.
pub fn is_named_in_normalised(phrase: &str, segment: &str) -> bool {
    let normalised = normalise(phrase);
    let needle = python_strip(&normalised);
    if needle.is_empty() {
        return false;
    }
    let is_word_char = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let mut from = 0;
    // Every occurrence, overlapping ones included: one with word edges is enough.
    while let Some(offset) = segment[from..].find(needle) {
        let start = from + offset;
        let end = start + needle.len();
        if !is_word_char(segment[..start].chars().next_back()) && !is_word_char(segment[end..].chars().next())
        {
            return true;
        }
        from = start + segment[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalised_borrows_only_what_normalise_leaves_unchanged() {
        for text in [
            "a b", "a  b", "A b", "a\tb", " a", "a ", "ǅ x", "straße", "", "\u{1c}",
        ] {
            assert_eq!(normalised(text), normalise(text), "{text:?}");
            assert_eq!(
                matches!(normalised(text), Cow::Borrowed(_)),
                normalise(text) == text,
                "{text:?}"
            );
        }
    }

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

    #[test]
    fn whole_word_naming() {
        assert!(is_named("Pneumonia", "likely pneumonia."));
        assert!(!is_named("Pneumonia", "likely bronchopneumonia"));
        assert!(!is_named("Pneumonia", "pneumonia2"));
        assert!(
            is_named("Pulmonary  embolism", "a pulmonary embolism (pe)"),
            "whitespace collapsed"
        );
        assert!(
            is_named("Pneumonia", "xpneumonia pneumonia"),
            "a later occurrence counts"
        );
        assert!(!is_named("  ", "anything"), "blank option text names nothing");
        assert!(
            is_named("Pneumonia", "The diagnosis is\nPNEUMONIA"),
            "the text is normalised too"
        );
        assert!(is_named_in_normalised("Pneumonia", "likely pneumonia."));
        assert!(
            !is_named_in_normalised("Pneumonia", "likely PNEUMONIA."),
            "a segment not normalised is taken as it is"
        );
    }
}
