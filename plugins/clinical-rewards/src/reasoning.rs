//! How the beyond-paper objectives judge a clause of the reasoning: whether it argues for what
//! it names, whether it gives a reason. Reading the reasoning, its clauses and the options
//! they name are the sdk's rules (`crpo_sdk::rules`), shared with plugin authors.

use crpo_sdk::rules::chosen_letter;
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

/// Whether a clause gives a reason.
pub fn gives_reason(clause: &str) -> bool {
    REASON.is_match(clause)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crpo_sdk::rules::clauses;

    #[test]
    fn endorsing_and_negating_clauses() {
        let clauses = clauses("System 1: fever suggests Pneumonia; option C does not fit.\nB (heparin) fits");
        assert!(endorses(&clauses[0]) && !endorses(&clauses[1]) && endorses(&clauses[2]));
        assert!(gives_reason(&clauses[1]) && !gives_reason("pneumonia"));
    }
}
