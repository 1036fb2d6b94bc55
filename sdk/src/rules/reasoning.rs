//! A completion's reasoning (apart from its final answer), cut into clauses, and whether a
//! clause names an answer option.

use super::text::{is_named_in_normalised, normalise, normalised, preprocess};
use crate::example::AnswerOption;
use regex::Regex;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::LazyLock;

static CLAUSE_END: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[.;!?\n]+(?:\s|$)|\n").unwrap());

/// The reasoning: the `<dx>` or `<think>` body when the preprocessed completion has one, else
/// everything before the last `\boxed` (or all of it).
pub fn reasoning(completion: &str) -> &str {
    let text = preprocess(completion);
    for (open, close) in [("<dx>", "</dx>"), ("<think>", "</think>")] {
        if let (Some(start), Some(end)) = (text.find(open), text.rfind(close)) {
            if start + open.len() <= end {
                return &text[start + open.len()..end];
            }
        }
    }
    match text.rfind("\\boxed") {
        Some(end) => &text[..end],
        None => text,
    }
}

/// The reasoning's clauses (split at `.`, `;`, `!`, `?` followed by a space or the end, and
/// at line breaks, but not after an abbreviation: [`ends_an_abbreviation`]), normalised
/// (lower case, single spaces), blank ones dropped.
pub fn clauses(reasoning: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for stop in CLAUSE_END.find_iter(reasoning) {
        if !ends_an_abbreviation(reasoning, stop.start(), stop.end()) {
            pieces.push(&reasoning[start..stop.start()]);
            start = stop.end();
        }
    }
    pieces.push(&reasoning[start..]);
    pieces
        .into_iter()
        .map(normalise)
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

/// Whether the stop `text[start..end]` is a full stop ending an abbreviation, not a clause:
/// a capital letter alone (`C. difficile`, `E. coli`, `S. aureus`: options name organisms so)
/// or `e.g.`, `i.e.`, `vs.`, before a lower-case word on the same line.
fn ends_an_abbreviation(text: &str, start: usize, end: usize) -> bool {
    let stop = &text[start..end];
    if !stop.starts_with('.') || stop.trim_end() != "." || stop.contains('\n') {
        return false;
    }
    if !text[end..].chars().next().is_some_and(char::is_lowercase) {
        return false;
    }
    let word = text[..start]
        .rsplit(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("");
    let mut letters = word.chars();
    let capital_alone = letters.next().is_some_and(char::is_uppercase) && letters.next().is_none();
    capital_alone || matches!(word.to_lowercase().as_str(), "e.g" | "i.e" | "vs")
}

/// Whether a clause names an option: its text as a whole word ([`super::is_named`]), or its
/// key as `option b`, `choice b`, `answer b`, `(b)` or `b (`, in the clause normalised (as
/// [`clauses`] gives it; normalising again changes nothing).
pub fn names_option(clause: &str, option: &AnswerOption) -> bool {
    let clause = normalised(clause);
    let clause = clause.as_ref();
    // An option's own closing stop ("All of the above.") was cut off the clause with it.
    let text = option.text.trim_end_matches(['.', ';', '!', '?']);
    if is_named_in_normalised(text, clause) {
        return true;
    }
    KEY_PATTERNS.with_borrow_mut(|patterns| {
        let key = option.key.to_lowercase();
        if !patterns.contains_key(&key) {
            // Keys are few (A–E, 1–10…); a runaway set of them is not kept forever.
            if patterns.len() >= MAX_CACHED_KEYS {
                patterns.clear();
            }
            patterns.insert(key.clone(), key_pattern(&key));
        }
        patterns[&key].as_ref().is_some_and(|re| re.is_match(clause))
    })
}

const MAX_CACHED_KEYS: usize = 256;

thread_local! {
    /// The compiled key pattern per option key: every clause × option of every completion asks
    /// for one, and compiling it each time was most of `names_option`'s cost.
    static KEY_PATTERNS: RefCell<HashMap<String, Option<Regex>>> = RefCell::new(HashMap::new());
}

/// `option b`, `choice b`, `answer b`, `(b)` or `b (` for the lower-cased `key`. The keys `a`
/// and `i` are words too ("fits a (newly formed) clot"): their `k (` counts only at the
/// clause's start or after `,`, `;` or `:`.
fn key_pattern(key: &str) -> Option<Regex> {
    let before = if matches!(key, "a" | "i") {
        r"(^|[,;:])\s*"
    } else {
        r"(^|[\s,;:])"
    };
    let key = regex::escape(key);
    Regex::new(&format!(
        r"\b(option|choice|answer)\s+{key}\b|\({key}\)|{before}{key}\s*\("
    ))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option(key: &str, text: &str) -> AnswerOption {
        AnswerOption {
            key: key.into(),
            text: text.into(),
        }
    }

    #[test]
    fn key_patterns_stay_right_past_the_cache_bound() {
        for round in 0..2 {
            for n in 0..(MAX_CACHED_KEYS + 10) {
                let key = format!("k{n}");
                let clause = format!("see option {key} here");
                assert!(names_option(&clause, &option(&key, "zzz")), "{round} {key}");
                assert!(
                    !names_option("see option q here", &option(&key, "zzz")),
                    "{round} {key}"
                );
            }
        }
        assert!(names_option("see (B) here", &option("b", "zzz")));
        assert!(names_option("see (b) here", &option("B", "zzz")));
    }

    #[test]
    fn the_reasoning_is_the_dx_or_think_body_or_what_precedes_the_box() {
        assert_eq!(reasoning("<dx>a</dx><conclusion>\\boxed{B}</conclusion>"), "a");
        assert_eq!(reasoning("<think>t</think><answer>\\boxed{B}</answer>"), "t");
        assert_eq!(reasoning("It fits B. So \\boxed{B}"), "It fits B. So ");
        assert_eq!(reasoning("no answer at all"), "no answer at all");
    }

    #[test]
    fn clauses_name_options_by_text_or_letter() {
        let clauses = clauses("System 1: fever suggests Pneumonia; option C does not fit.\nB (heparin) fits");
        assert_eq!(clauses.len(), 3);
        assert!(names_option(&clauses[0], &option("A", "Pneumonia")));
        assert!(names_option(&clauses[1], &option("C", "Asthma")));
        assert!(
            names_option("Likely PNEUMONIA", &option("A", "Pneumonia")),
            "a clause not yet normalised"
        );
        assert!(names_option("see Option  C", &option("C", "Asthma")));
        assert!(names_option(&clauses[2], &option("B", "Heparin")));
        assert!(!names_option("a 45-year-old man", &option("A", "Asthma")));
    }

    #[test]
    fn abbreviations_stay_in_their_clause_and_an_option_s_own_stop_is_no_bar() {
        let split = clauses(
            "C. difficile colitis fits the antibiotics; E. coli is less likely. Option C. Then e.g. sepsis.",
        );
        assert_eq!(
            split,
            [
                "c. difficile colitis fits the antibiotics",
                "e. coli is less likely",
                "option c",
                "then e.g. sepsis"
            ]
        );
        assert!(names_option(&split[0], &option("A", "C. difficile colitis")));
        // Lower-case letters and a capital before a capitalised word still end clauses.
        assert_eq!(clauses("not b. c fits").len(), 2);
        let all = option("D", "All of the above.");
        let said = clauses("All of the above fits because each is possible.");
        assert!(names_option(&said[0], &all));
    }

    #[test]
    fn the_letters_a_and_i_as_words_name_no_option() {
        let a = option("A", "Aspirin");
        assert!(!names_option("heparin fits a (newly formed) clot", &a));
        assert!(names_option("a (aspirin) is contraindicated", &a));
        assert!(names_option("heparin fits; a (aspirin) does not", &a));
        assert!(names_option("(a) is wrong", &a));
        let i = option("I", "Ischemia");
        assert!(!names_option("as i (the student) think", &i));
        assert!(names_option("b (heparin) fits", &option("B", "Heparin")));
        assert!(names_option("it fits b (heparin)", &option("B", "Heparin")));
    }
}
