//! What the beyond-paper objectives read from a completion: its reasoning (apart from the
//! final answer), cut into clauses, and which options each clause names and how.

use crate::accuracy::chosen_letter;
use crate::clinical_reasoning::{is_named, normalise};
use crate::text::preprocess;
use crpo_sdk::AnswerOption;
use regex::Regex;
use std::sync::LazyLock;

static CLAUSE_END: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[.;!?\n]+(?:\s|$)|\n").unwrap());

/// Words that make a clause argue *for* what it names.
static ENDORSE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\b(fits?|fitting|consistent with|suggests?|suggestive of|most likely|likely|supports?|supported|confirms?|confirmed|indicates?|indicative of|points? to|explains?|best|correct|diagnosis is|answer is|favou?rs?|typical of|characteristic of|classic for)\b",
    )
    .unwrap()
});

/// Words that turn a clause against what it names.
static NEGATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\b(not|no|unlikely|less likely|rules? out|ruled out|excluded?|against|doesn't|don't|isn't|wrong|incorrect|rather than|instead of|neither|nor|without)\b",
    )
    .unwrap()
});

/// Words that give a reason.
static REASON: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\b(because|since|given|due to|as it|fits?|consistent|inconsistent|suggests?|explains?|rather than|unlikely|rules? out|ruled out|excluded?|typical|would|indicates?|points? to|supports?|against|presents? with|causes?|associated with|not)\b",
    )
    .unwrap()
});

/// The reasoning: the `<dx>` or `<think>` body when the completion has one, else everything
/// before the last `\boxed` (or all of it).
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

/// The final answer: the completion's boxed letter as `accuracy` reads it.
pub fn final_answer(completion: &str) -> Option<String> {
    chosen_letter(completion).map(String::from)
}

/// The reasoning's clauses, normalised (lower case, single spaces).
pub fn clauses(reasoning: &str) -> Vec<String> {
    CLAUSE_END
        .split(reasoning)
        .map(normalise)
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

/// Whether a normalised clause names an option: its text as a whole word, or its letter as
/// `option b`, `choice b`, `(b)` or `b (`.
pub fn names_option(clause: &str, option: &AnswerOption) -> bool {
    if is_named(&option.text, clause) {
        return true;
    }
    let key = regex::escape(&option.key.to_lowercase());
    Regex::new(&format!(
        r"\b(option|choice|answer)\s+{key}\b|\({key}\)|(^|[\s,;:]){key}\s*\("
    ))
    .map(|re| re.is_match(clause))
    .unwrap_or(false)
}

/// Whether a clause argues for what it names (an endorsing word, no negating word).
pub fn endorses(clause: &str) -> bool {
    ENDORSE.is_match(clause) && !NEGATE.is_match(clause)
}

/// Whether a clause gives a reason.
pub fn gives_reason(clause: &str) -> bool {
    REASON.is_match(clause)
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
    fn the_reasoning_is_the_dx_or_think_body_or_what_precedes_the_box() {
        assert_eq!(reasoning("<dx>a</dx><conclusion>\\boxed{B}</conclusion>"), "a");
        assert_eq!(reasoning("<think>t</think><answer>\\boxed{B}</answer>"), "t");
        assert_eq!(reasoning("It fits B. So \\boxed{B}"), "It fits B. So ");
    }

    #[test]
    fn clauses_name_options_by_text_or_letter() {
        let clauses = clauses("System 1: fever suggests Pneumonia; option C does not fit.\nB (heparin) fits");
        assert_eq!(clauses.len(), 3);
        assert!(names_option(&clauses[0], &option("A", "Pneumonia")));
        assert!(names_option(&clauses[1], &option("C", "Asthma")));
        assert!(names_option(&clauses[2], &option("B", "Heparin")));
        assert!(!names_option("a 45-year-old man", &option("A", "Asthma")));
        assert!(endorses(&clauses[0]) && !endorses(&clauses[1]) && endorses(&clauses[2]));
    }
}
