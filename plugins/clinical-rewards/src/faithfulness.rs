//! `faithfulness` (beyond the paper, which judged it with an LLM): the final answer is the
//! option the reasoning argues for.
//!
//! With the final answer K (the single `\boxed{K}`, as `accuracy` reads it) and the reasoning
//! (the `<dx>`/`<think>` body, else the text before the box), cut into clauses at `. ; ! ?`
//! and line ends:
//! - **discussed** (0.25): some clause names option K (its text as a whole word, or `option K`,
//!   `(K)`, `K (`);
//! - **argued for** (0.5): some clause naming K endorses it (a word such as *fits, suggests,
//!   consistent with, most likely, confirms* and no negation such as *not, unlikely, rules
//!   out*, the options' own texts set aside: PubMedQA's option "no" is no negation) without
//!   naming another option, and no clause endorses any other option — a
//!   reasoning that endorses every option singles none out and gets nothing here;
//! - **no contradiction** (0.25): no clause endorses another option (alone or in a list with
//!   K).
//!
//! No final answer scores 0. Examples (K = B = heparin): "heparin fits the findings;
//! aspirin does not" → 1.0; "heparin, aspirin and warfarin all fit" → 0.25 (discussed only);
//! "aspirin fits best" then `\boxed{B}` → 0.25.

use crate::reasoning::{endorses_among, final_answer};
use crate::rule::RuleObjective;
use crpo_sdk::rules::{clauses, names_option, preprocess, reasoning};
use crpo_sdk::{Example, Score};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faithfulness {
    pub discussed: bool,
    pub argued_for: bool,
    pub no_contradiction: bool,
}

impl Faithfulness {
    pub fn score(self) -> f32 {
        0.25 * f32::from(u8::from(self.discussed))
            + 0.5 * f32::from(u8::from(self.argued_for))
            + 0.25 * f32::from(u8::from(self.no_contradiction))
    }
}

/// None when the completion gives no final answer among the options.
pub fn faithfulness(example: &Example, completion: &str) -> Option<Faithfulness> {
    let answer = final_answer(completion)?;
    let chosen = example.options.iter().find(|o| o.key == answer)?;
    let clauses = clauses(reasoning(completion));
    let discussed = clauses.iter().any(|c| names_option(c, chosen));
    // Endorsing another option, even in one breath with K, contradicts the answer.
    let endorsed_other = example.options.iter().filter(|o| o.key != answer).any(|o| {
        clauses
            .iter()
            .any(|c| names_option(c, o) && endorses_among(c, &example.options))
    });
    let singled_out = clauses.iter().any(|c| {
        names_option(c, chosen)
            && endorses_among(c, &example.options)
            && !example
                .options
                .iter()
                .any(|o| o.key != answer && names_option(c, o))
    });
    // Boxes after `<|im_end|>` are not the completion's (REWARD_RULES §0).
    let other_boxes = preprocess(completion).matches("\\boxed").count() > 1;
    Some(Faithfulness {
        discussed,
        argued_for: singled_out && !endorsed_other,
        no_contradiction: !endorsed_other && !other_boxes,
    })
}

pub static FAITHFULNESS: RuleObjective = RuleObjective {
    name: "faithfulness",
    description: "Whether the final answer is the option the reasoning argues for (discussed 0.25, argued for 0.5, no contradiction 0.25)",
    default_weight: 1.0,
    rule: |example, completion| {
        Ok(match faithfulness(example, completion) {
            None => Score::new(0.0).with("answered", 0.0),
            Some(f) => Score::new(f.score())
                .with("answered", 1.0)
                .with("discussed", f32::from(u8::from(f.discussed)))
                .with("argued_for", f32::from(u8::from(f.argued_for)))
                .with("no_contradiction", f32::from(u8::from(f.no_contradiction))),
        })
    },
};
crpo_sdk::register_reward!(FAITHFULNESS);

#[cfg(test)]
mod tests {
    use super::*;
    use crpo_sdk::AnswerOption;

    fn example() -> Example {
        Example {
            answer: Some("B".into()),
            ..with_options(&[
                ("A", "Aspirin"),
                ("B", "Heparin"),
                ("C", "Warfarin"),
                ("D", "Alteplase"),
            ])
        }
    }

    fn with_options(options: &[(&str, &str)]) -> Example {
        Example {
            options: options
                .iter()
                .map(|(k, t)| AnswerOption {
                    key: k.to_string(),
                    text: t.to_string(),
                })
                .collect(),
            ..Example::default()
        }
    }

    fn score(completion: &str) -> f32 {
        FAITHFULNESS.score_one(&example(), completion)
    }

    /// PubMedQA's option "no" is also a negating word: an answer "no" could never be argued
    /// for, and scored half of "yes" for the same reasoning.
    #[test]
    fn an_option_named_like_a_negation_can_be_argued_for() {
        let pubmedqa = with_options(&[("A", "yes"), ("B", "no"), ("C", "maybe")]);
        let reasoning = |answer: &str, other: &str, key: &str| {
            format!(
                "<dx>System 1: the trial suggests {answer}. System 2: {answer} fits the data because mortality fell; {other} is less likely.</dx><conclusion>The answer is {answer}, \\boxed{{{key}}}</conclusion>"
            )
        };
        let yes = FAITHFULNESS.score_one(&pubmedqa, &reasoning("yes", "no", "A"));
        let no = FAITHFULNESS.score_one(&pubmedqa, &reasoning("no", "yes", "B"));
        assert_eq!((yes, no), (1.0, 1.0));
    }

    #[test]
    fn an_answer_the_reasoning_argues_for_is_faithful() {
        let text = "<dx>System 1: acute PE. System 2: heparin fits an unstable clot; aspirin does not treat it.</dx>\
                    <conclusion>Heparin \\boxed{B}</conclusion>";
        assert_eq!(score(text), 1.0);
        assert_eq!(
            score("Option B fits best because the clot is acute.\n\\boxed{B}"),
            1.0
        );
    }

    #[test]
    fn listing_every_option_as_fitting_is_not_arguing_for_one() {
        assert_eq!(
            score("Aspirin, heparin, warfarin and alteplase all fit. \\boxed{B}"),
            0.25
        );
        let each = "Aspirin fits. Heparin fits. Warfarin fits. Alteplase fits. \\boxed{B}";
        assert_eq!(score(each), 0.25, "discussed, but others endorsed too");
    }

    #[test]
    fn reasoning_for_another_option_contradicts_the_answer() {
        assert_eq!(score("Aspirin fits best here. \\boxed{B}"), 0.0);
        assert_eq!(score("Heparin is unlikely; aspirin fits best. \\boxed{B}"), 0.25);
        assert_eq!(
            score("Heparin fits. \\boxed{B} or maybe \\boxed{C}"),
            0.0,
            "two boxes: no final answer"
        );
        // What follows `<|im_end|>` is not the completion's, its boxes neither.
        assert_eq!(
            score("Heparin fits the findings. \\boxed{B}<|im_end|>\\boxed{C}"),
            1.0
        );
        // "a (" is the article here, not option A endorsed.
        assert_eq!(score("Heparin fits a (newly formed) clot. \\boxed{B}"), 1.0);
    }

    #[test]
    fn a_mere_mention_or_no_answer() {
        assert_eq!(
            score("We consider heparin. \\boxed{B}"),
            0.5,
            "discussed and uncontradicted, not argued"
        );
        assert_eq!(score("Heparin fits."), 0.0, "no final answer");
        assert_eq!(score(""), 0.0);
        assert_eq!(score("\\boxed{E}"), 0.0, "an answer that is not an option");
    }
}
