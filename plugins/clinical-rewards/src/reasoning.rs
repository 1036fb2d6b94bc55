//! How the beyond-paper objectives judge a clause of the reasoning: whether it argues for what
//! it names, whether it gives a reason. Reading the reasoning, its clauses and the options
//! they name are the sdk's rules (`crpo_sdk::rules`), shared with plugin authors.

use crpo_sdk::rules::{chosen_letter, normalise, python_strip};
use crpo_sdk::AnswerOption;
use regex::Regex;
use std::sync::LazyLock;

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

/// The final answer: the completion's boxed letter as `accuracy` reads it.
pub fn final_answer(completion: &str) -> Option<String> {
    chosen_letter(completion).map(String::from)
}

/// Whether a clause argues for what it names (an endorsing word, no negating word).
pub fn endorses(clause: &str) -> bool {
    ENDORSE.is_match(clause) && !NEGATE.is_match(clause)
}

/// [`endorses`], the options' own texts set aside: what a clause names is not a word for or
/// against it (PubMedQA's option "no" negated every clause naming it; an option "best
/// supportive care" endorsed itself).
pub fn endorses_among(clause: &str, options: &[AnswerOption]) -> bool {
    endorses(&without_option_texts(clause, options))
}

/// The normalised `clause` with each option's text, where it stands as a whole word, blanked.
fn without_option_texts(clause: &str, options: &[AnswerOption]) -> String {
    let is_word_char = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let mut blanked: Vec<(usize, usize)> = Vec::new();
    for option in options {
        let normalised = normalise(&option.text);
        let needle = python_strip(&normalised);
        if needle.is_empty() {
            continue;
        }
        let mut from = 0;
        while let Some(offset) = clause[from..].find(needle) {
            let start = from + offset;
            let end = start + needle.len();
            if !is_word_char(clause[..start].chars().next_back())
                && !is_word_char(clause[end..].chars().next())
            {
                blanked.push((start, end));
            }
            from = start + clause[start..].chars().next().map_or(1, char::len_utf8);
        }
    }
    blanked.sort_unstable();
    let mut kept = String::with_capacity(clause.len());
    let mut at = 0;
    for (start, end) in blanked {
        if start >= at {
            kept.push_str(&clause[at..start]);
            kept.push(' ');
            at = end;
        } else if end > at {
            at = end;
        }
    }
    kept.push_str(&clause[at..]);
    kept
}

/// Whether a clause gives a reason.
pub fn gives_reason(clause: &str) -> bool {
    REASON.is_match(clause)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crpo_sdk::rules::clauses;

    #[test]
    fn an_option_s_own_text_neither_negates_nor_endorses() {
        let option = |key: &str, text: &str| AnswerOption {
            key: key.into(),
            text: text.into(),
        };
        let pubmedqa = [option("A", "yes"), option("B", "no"), option("C", "maybe")];
        assert!(!endorses("the trial suggests no"));
        assert!(endorses_among("the trial suggests no", &pubmedqa));
        assert!(!endorses_among("the trial does not suggest no", &pubmedqa));
        let care = [option("A", "Best supportive care"), option("B", "Surgery")];
        assert!(!endorses_among("best supportive care was given", &care));
        assert!(endorses_among("surgery fits; best", &care));
    }

    #[test]
    fn endorsing_and_negating_clauses() {
        let clauses = clauses("System 1: fever suggests Pneumonia; option C does not fit.\nB (heparin) fits");
        assert!(endorses(&clauses[0]) && !endorses(&clauses[1]) && endorses(&clauses[2]));
        assert!(gives_reason(&clauses[1]) && !gives_reason("pneumonia"));
    }
}
