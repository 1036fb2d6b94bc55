//! `clinical_reasoning` (REWARD_RULES §3): the paper's `<dx>…</dx><conclusion>…</conclusion>`
//! format with System 1 / System 2 reasoning, plus a cross-reference bonus.
//!
//! Format (1.0) holds when the whole text is `<dx>dx</dx>` then `<conclusion>concl</conclusion>`,
//! each of the four tags occurs once, `dx` says `System 1` before `System 2`, and `concl` is not
//! blank; otherwise 0. Bonus (+0.5): the conclusion's choice — its single `\boxed{K}` naming an
//! option key, else the one option whose text it names — has its option text named in `dx`.
//! "Named" means: lower-cased, whitespace-collapsed, as a whole word (no ASCII letter or digit
//! either side), so `pneumonia` is not named in `bronchopneumonia`.
//! Example: `<dx>System 1: looks like pneumonia. System 2: fever and consolidation fit
//! pneumonia.</dx><conclusion>\boxed{B}</conclusion>` with B = Pneumonia → 1.5.

use crate::rule::RuleObjective;
use crpo_sdk::rules::{is_named_in_normalised, normalise, preprocess, python_strip, PY_SPACE};
use crpo_sdk::{AnswerOption, Score};
use regex::Regex;
use std::sync::LazyLock;

static DX_CONCLUSION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?s)\A<dx>(.*?)</dx>{PY_SPACE}*<conclusion>(.*?)</conclusion>\z"
    ))
    .unwrap()
});
static BOXED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\\boxed\{(.*?)\}").unwrap());

const TAGS: [&str; 4] = ["<dx>", "</dx>", "<conclusion>", "</conclusion>"];

/// The score and whether each part held.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClinicalReasoning {
    pub format: bool,
    pub cross_reference: bool,
}

impl ClinicalReasoning {
    pub fn score(self) -> f32 {
        match (self.format, self.cross_reference) {
            (false, _) => 0.0,
            (true, false) => 1.0,
            (true, true) => 1.5,
        }
    }
}

pub fn clinical_reasoning(completion: &str, options: &[AnswerOption]) -> ClinicalReasoning {
    let Some((dx, conclusion)) = split_format(preprocess(completion)) else {
        return ClinicalReasoning {
            format: false,
            cross_reference: false,
        };
    };
    let dx = normalise(dx);
    let cross_reference = conclusion_choice(conclusion, options)
        .is_some_and(|chosen| is_named_in_normalised(&chosen.text, &dx));
    ClinicalReasoning {
        format: true,
        cross_reference,
    }
}

/// F1–F4: the dx and conclusion segments when the format holds.
fn split_format(text: &str) -> Option<(&str, &str)> {
    let captures = DX_CONCLUSION.captures(text)?;
    if TAGS.iter().any(|tag| text.matches(tag).count() != 1) {
        return None;
    }
    let dx = captures.get(1)?.as_str();
    let conclusion = captures.get(2)?.as_str();
    let system1 = dx.find("System 1")?;
    let system2 = dx.find("System 2")?;
    if system1 > system2 || python_strip(conclusion).is_empty() {
        return None;
    }
    Some((dx, conclusion))
}

/// The option the conclusion chooses: its single box holding an option key, else the only
/// option whose text it names.
fn conclusion_choice<'a>(conclusion: &str, options: &'a [AnswerOption]) -> Option<&'a AnswerOption> {
    let boxes: Vec<&str> = BOXED
        .captures_iter(conclusion)
        .map(|c| c.get(1).map_or("", |m| m.as_str()))
        .collect();
    if let [key] = boxes.as_slice() {
        if let Some(option) = options.iter().find(|o| o.key == *key) {
            return Some(option);
        }
    }
    let conclusion = normalise(conclusion);
    let mut named = options
        .iter()
        .filter(|o| is_named_in_normalised(&o.text, &conclusion));
    match (named.next(), named.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    }
}

pub static CLINICAL_REASONING: RuleObjective = RuleObjective {
    name: "clinical_reasoning",
    description: "1 for <dx> with System 1 then System 2 reasoning + <conclusion>; +0.5 when the chosen option is named in <dx>",
    default_weight: 1.0,
    rule: |example, completion| {
        let result = clinical_reasoning(completion, &example.options);
        Ok(Score::new(result.score())
            .with("format", f32::from(u8::from(result.format)))
            .with("cross_reference", f32::from(u8::from(result.cross_reference))))
    },
};
crpo_sdk::register_reward!(CLINICAL_REASONING);

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Vec<AnswerOption> {
        [
            ("A", "Asthma"),
            ("B", "Pneumonia"),
            ("C", "Pulmonary embolism"),
            ("D", "Heart failure"),
        ]
        .into_iter()
        .map(|(key, text)| AnswerOption {
            key: key.into(),
            text: text.into(),
        })
        .collect()
    }

    fn score(text: &str) -> f32 {
        clinical_reasoning(text, &options()).score()
    }

    const DX: &str =
        "<dx>System 1: fever and cough suggest Pneumonia.\nSystem 2: focal crackles and consolidation \
                      confirm pneumonia; asthma lacks fever.</dx>";

    #[test]
    fn full_score_with_box_or_named_choice() {
        assert_eq!(
            score(&format!("{DX}\n<conclusion>\\boxed{{B}}</conclusion>")),
            1.5
        );
        assert_eq!(
            score(&format!(
                "{DX}<conclusion>The diagnosis is  PNEUMONIA.</conclusion>"
            )),
            1.5
        );
    }

    #[test]
    fn conclusion_contradicting_the_reasoning_gets_no_bonus() {
        assert_eq!(
            score(&format!("{DX}<conclusion>\\boxed{{D}}</conclusion>")),
            1.0,
            "D is never discussed"
        );
        assert_eq!(
            score(&format!("{DX}<conclusion>Heart failure.</conclusion>")),
            1.0
        );
    }

    #[test]
    fn ambiguous_choice_gets_no_bonus() {
        assert_eq!(
            score(&format!("{DX}<conclusion>Pneumonia or asthma.</conclusion>")),
            1.0,
            "two named"
        );
        assert_eq!(
            score(&format!(
                "{DX}<conclusion>\\boxed{{B}} \\boxed{{A}} asthma</conclusion>"
            )),
            1.5,
            "two boxes fall back to the one named option"
        );
        assert_eq!(
            score(&format!("{DX}<conclusion>\\boxed{{Z}}</conclusion>")),
            1.0,
            "no such key, nothing named"
        );
    }

    #[test]
    fn format_failures() {
        assert_eq!(score("<conclusion>B</conclusion>"), 0.0, "missing dx");
        assert_eq!(
            score(&format!("<conclusion>B</conclusion>{DX}")),
            0.0,
            "reordered"
        );
        assert_eq!(
            score("<dx>System 2 then System 1</dx><conclusion>B</conclusion>"),
            0.0,
            "systems reordered"
        );
        assert_eq!(
            score("<dx>system 1, system 2</dx><conclusion>B</conclusion>"),
            0.0,
            "case-sensitive markers"
        );
        assert_eq!(
            score("<dx>System 1</dx><conclusion>B</conclusion>"),
            0.0,
            "no System 2"
        );
        assert_eq!(
            score(&format!("{DX}<conclusion> \n </conclusion>")),
            0.0,
            "blank conclusion"
        );
        assert_eq!(
            score(&format!("{DX}<conclusion>B <dx></conclusion>")),
            0.0,
            "a tag twice"
        );
        assert_eq!(
            score(&format!("Answer: {DX}<conclusion>B</conclusion>")),
            0.0,
            "text before"
        );
        assert_eq!(score(""), 0.0);
    }

    #[test]
    fn dx_listing_every_option_earns_the_bonus_known_limit() {
        let dx = "<dx>System 1: asthma? System 2: asthma, pneumonia, pulmonary embolism, heart failure.</dx>";
        assert_eq!(score(&format!("{dx}<conclusion>\\boxed{{D}}</conclusion>")), 1.5);
    }
}
