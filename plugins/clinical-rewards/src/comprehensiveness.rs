//! `comprehensiveness` (beyond the paper, which judged it with an LLM): how many of the
//! options the reasoning weighs, each with a reason.
//!
//! The reasoning (the `<dx>`/`<think>` body, else the text before the box) is cut into clauses
//! at `. ; ! ?` and line ends. A clause that names k options (by text, or `option X`, `(X)`,
//! `X (`) and gives a reason (*because, fits, suggests, consistent, rather than, unlikely, rules
//! out, not, …*) credits each of them 1/k: a reason shared by a list counts for less than one
//! per option, and a bare list with no reason counts nothing. The score is the mean over the
//! options of min(1, credit), in [0, 1]; an example without options scores 0.
//! Example with options A–D: "A fits the fever; B is unlikely without rash; C and D do not
//! explain the cough" → (1 + 1 + ½ + ½)/4 = 0.75.

use crate::reasoning::gives_reason;
use crate::rule::RuleObjective;
use crpo_sdk::rules::{clauses, names_option, reasoning};
use crpo_sdk::{Example, Score};

/// Each option's credit, in option order.
pub fn option_credits(example: &Example, completion: &str) -> Vec<f32> {
    let mut credits = vec![0.0f32; example.options.len()];
    for clause in clauses(reasoning(completion)) {
        if !gives_reason(&clause) {
            continue;
        }
        let named: Vec<usize> = (0..example.options.len())
            .filter(|&i| names_option(&clause, &example.options[i]))
            .collect();
        for &i in &named {
            credits[i] += 1.0 / named.len() as f32;
        }
    }
    credits
}

pub fn comprehensiveness(example: &Example, completion: &str) -> f32 {
    let credits = option_credits(example, completion);
    if credits.is_empty() {
        return 0.0;
    }
    credits.iter().map(|c| c.min(1.0)).sum::<f32>() / credits.len() as f32
}

pub static COMPREHENSIVENESS: RuleObjective = RuleObjective {
    name: "comprehensiveness",
    description:
        "Share of the options the reasoning weighs with a reason of their own (a shared reason counts 1/k)",
    default_weight: 1.0,
    rule: |example, completion| {
        let credits = option_credits(example, completion);
        let weighed = credits.iter().filter(|&&c| c >= 1.0).count();
        Ok(Score::new(comprehensiveness(example, completion)).with("options_weighed_fully", weighed as f32))
    },
};
crpo_sdk::register_reward!(COMPREHENSIVENESS);

#[cfg(test)]
mod tests {
    use super::*;
    use crpo_sdk::AnswerOption;

    fn example() -> Example {
        let options = [
            ("A", "Pneumonia"),
            ("B", "Measles"),
            ("C", "Asthma"),
            ("D", "Heart failure"),
        ];
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

    #[test]
    fn each_option_with_its_own_reason_counts_fully() {
        let text = "Pneumonia fits the fever; measles is unlikely without rash; asthma and heart failure do not explain the cough. \\boxed{A}";
        assert_eq!(comprehensiveness(&example(), text), 0.75);
        let all = "<think>Pneumonia fits the crackles. Measles is unlikely without rash. Asthma would cause wheeze. \
                   Heart failure is not suggested by the history.</think><answer>\\boxed{A}</answer>";
        assert_eq!(comprehensiveness(&example(), all), 1.0);
    }

    #[test]
    fn a_bare_list_or_a_shared_reason_counts_little() {
        assert_eq!(
            comprehensiveness(
                &example(),
                "Pneumonia, measles, asthma, heart failure. \\boxed{A}"
            ),
            0.0
        );
        let shared = "Pneumonia, measles, asthma and heart failure are all consistent. \\boxed{A}";
        assert_eq!(comprehensiveness(&example(), shared), 0.25);
    }

    #[test]
    fn edge_cases() {
        assert_eq!(comprehensiveness(&example(), ""), 0.0);
        assert_eq!(
            comprehensiveness(&Example::default(), "Pneumonia fits."),
            0.0,
            "no options"
        );
        let repeated = "Pneumonia fits. Pneumonia fits again because of fever.";
        assert_eq!(
            comprehensiveness(&example(), repeated),
            0.25,
            "one option counts at most once"
        );
    }
}
