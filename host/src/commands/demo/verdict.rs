//! The demo's closing verdict: whether the effect it exists to show appeared on this seed —
//! CRPO keeping the reasoning (faithfulness, comprehensiveness) that GRPO gives up, at about
//! GRPO's accuracy — said plainly either way, from the held-out greedy evaluations. The
//! tables alone left a reader to work it out, and on some seeds (docs/demo.md: seed 13) the
//! effect does not appear.

use crate::train::eval::EvalReport;
use serde::Serialize;

/// CRPO − GRPO on each reasoning objective (greedy) at or above which CRPO kept the reasoning.
pub const REASONING_MARGIN: f64 = 0.1;
/// How far CRPO's share right may fall below GRPO's and still count as "about its accuracy".
pub const ACCURACY_MARGIN: f64 = 0.07;

/// The objectives GRPO gives up and CRPO rewards.
const REASONING: [&str; 2] = ["faithfulness", "comprehensiveness"];

#[derive(Debug, Serialize, PartialEq)]
pub struct Verdict {
    /// Whether the effect appeared: the reasoning kept, at about GRPO's accuracy.
    pub effect_shown: bool,
    pub text: String,
}

/// The verdict from the evaluations of arms labelled `GRPO` and `CRPO` (greedy); `None` when
/// the demo ran other arms.
pub fn verdict(reports: &[EvalReport]) -> Option<Verdict> {
    let greedy = |label: &str| {
        reports
            .iter()
            .find(|r| r.label == label && r.samples == 1 && r.temperature == 0.0)
    };
    let (grpo, crpo) = (greedy("GRPO")?, greedy("CRPO")?);
    let gaps: Vec<(&str, f64, f64)> = REASONING
        .iter()
        .map(|&name| {
            let of = |r: &EvalReport| r.objectives.get(name).copied().unwrap_or(f64::NAN);
            (name, of(crpo), of(grpo))
        })
        .collect();
    let figures = gaps
        .iter()
        .map(|(name, c, g)| format!("{name} {c:.3} against {g:.3} ({:+.3})", c - g))
        .collect::<Vec<_>>()
        .join(", ");
    let accuracy = format!("share right {:.3} against {:.3}", crpo.accuracy, grpo.accuracy);
    let figures_known = gaps.iter().all(|(_, c, g)| c.is_finite() && g.is_finite())
        && crpo.accuracy.is_finite()
        && grpo.accuracy.is_finite();
    if !figures_known {
        return Some(Verdict {
            effect_shown: false,
            text: format!(
                "Verdict: none — an evaluation lacks a figure it needs (CRPO against GRPO: {figures}; {accuracy})."
            ),
        });
    }
    // Judged on the figures as printed (three decimals): 0.6 − 0.5 is 0.0999… in binary, and
    // a "+0.100" beside "not by 0.1" would contradict itself.
    let at_least = |value: f64, bound: f64| (value * 1000.0).round() >= (bound * 1000.0).round();
    let kept = gaps.iter().all(|(_, c, g)| at_least(c - g, REASONING_MARGIN));
    let accurate = at_least(crpo.accuracy, grpo.accuracy - ACCURACY_MARGIN);
    let text = match (kept, accurate) {
        (true, true) => format!(
            "Verdict: CRPO kept the reasoning GRPO gave up, at about GRPO's accuracy — the effect this demo shows. Held-out, greedy, CRPO against GRPO: {figures}; {accuracy}."
        ),
        (true, false) => format!(
            "Verdict: CRPO kept more of the reasoning than GRPO but is right less often: on this seed the trade cost accuracy. Held-out, greedy, CRPO against GRPO: {figures}; {accuracy}."
        ),
        (false, _) => format!(
            "Verdict: the effect this demo is meant to show did not appear on this seed — CRPO did not keep clearly more of the reasoning than GRPO (by {REASONING_MARGIN} or more on each). Held-out, greedy, CRPO against GRPO: {figures}; {accuracy}. docs/demo.md lists the seeds tried and which show it."
        ),
    };
    Some(Verdict {
        effect_shown: kept && accurate,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(label: &str, accuracy: f64, faithfulness: f64, comprehensiveness: f64) -> EvalReport {
        EvalReport {
            label: label.into(),
            samples: 1,
            temperature: 0.0,
            accuracy,
            objectives: [
                ("faithfulness".to_string(), faithfulness),
                ("comprehensiveness".to_string(), comprehensiveness),
            ]
            .into(),
            ..EvalReport::default()
        }
    }

    #[test]
    fn the_effect_is_shown_only_with_the_reasoning_kept_at_about_grpo_s_accuracy() {
        let shown = verdict(&[report("GRPO", 0.98, 0.30, 0.10), report("CRPO", 0.95, 0.60, 0.70)]).unwrap();
        assert!(shown.effect_shown, "{}", shown.text);
        assert!(
            shown.text.contains("faithfulness 0.600 against 0.300 (+0.300)"),
            "{}",
            shown.text
        );
        // Seed 13's figures: no reasoning kept.
        let absent = verdict(&[
            report("GRPO", 0.979, 0.50, 0.417),
            report("CRPO", 0.875, 0.451, 0.414),
        ])
        .unwrap();
        assert!(!absent.effect_shown);
        assert!(
            absent.text.contains("did not appear on this seed"),
            "{}",
            absent.text
        );
        // Seed 1234's kind: reasoning kept, accuracy lost.
        let costly = verdict(&[report("GRPO", 0.990, 0.2, 0.2), report("CRPO", 0.865, 0.6, 0.6)]).unwrap();
        assert!(
            !costly.effect_shown && costly.text.contains("cost accuracy"),
            "{}",
            costly.text
        );
        // One objective short of the margin is not the effect.
        let half = verdict(&[report("GRPO", 0.9, 0.2, 0.2), report("CRPO", 0.9, 0.6, 0.25)]).unwrap();
        assert!(!half.effect_shown);
        // Exactly at the margins (0.6 − 0.5 and 0.83 − 0.9 are inexact in binary) is enough.
        let edge = verdict(&[report("GRPO", 0.9, 0.5, 0.5), report("CRPO", 0.83, 0.6, 0.6)]).unwrap();
        assert!(edge.effect_shown, "{}", edge.text);
    }

    #[test]
    fn a_missing_figure_gives_no_judgement() {
        let mut crpo = report("CRPO", 0.9, 0.6, 0.6);
        crpo.objectives.remove("comprehensiveness");
        let none = verdict(&[report("GRPO", 0.9, 0.2, 0.2), crpo]).unwrap();
        assert!(
            !none.effect_shown && none.text.starts_with("Verdict: none"),
            "{}",
            none.text
        );
        let unknown = verdict(&[report("GRPO", f64::NAN, 0.2, 0.2), report("CRPO", 0.9, 0.6, 0.6)]).unwrap();
        assert!(unknown.text.starts_with("Verdict: none"), "{}", unknown.text);
    }

    #[test]
    fn other_arms_get_no_verdict_and_sampled_evaluations_are_not_read() {
        assert_eq!(
            verdict(&[report("GRPO", 0.9, 0.2, 0.2), report("crpo-lite", 0.9, 0.6, 0.6)]),
            None
        );
        let mut sampled = report("CRPO", 0.9, 0.9, 0.9);
        sampled.samples = 8;
        sampled.temperature = 1.0;
        assert_eq!(verdict(&[report("GRPO", 0.9, 0.2, 0.2), sampled]), None);
    }
}
