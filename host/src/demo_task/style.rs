//! The demo's reasoning styles. Each is dealt independently of whether the reference is right,
//! and each scores differently on the clinical objectives (with the chosen option K):
//!
//! | style | reasoning | clinical_reasoning | faithfulness | comprehensiveness |
//! |---|---|---|---|---|
//! | careful | System 1 names K's key finding and text; System 2 weighs every option, by letter, by its key finding | 1.5 | 1 | 1 |
//! | hedging | "option J fits …; option K fits too" (letters, not names) | 1.0 | 0.25 | 0.5 |
//! | shortcut | restates the findings, no System 2, weighs nothing | 0 | 0.25 | 0 |

use super::knowledge::{Ask, Group};
use super::letter;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Careful,
    Shortcut,
    Hedging,
}

impl Style {
    pub const ALL: [Style; 3] = [Style::Careful, Style::Shortcut, Style::Hedging];

    pub fn label(self) -> &'static str {
        match self {
            Style::Careful => "careful",
            Style::Shortcut => "shortcut",
            Style::Hedging => "hedging",
        }
    }

    /// The reference completion choosing option `chosen` for a question about condition
    /// `gold` of `group`; `runner_up` is the other option a hedging reference wavers towards.
    pub fn reference(self, group: &Group, ask: Ask, gold: usize, chosen: usize, runner_up: usize) -> String {
        let findings = group.conditions[gold].findings;
        let key = |i: usize| group.conditions[i].key;
        let (k, j) = (letter(chosen), letter(runner_up));
        let (dx, conclusion) = match self {
            Style::Careful => {
                // Every option by its letter, in order, for or against by its key finding; the
                // chosen option's text once, in System 1 (what the cross-reference looks for).
                let weighed: Vec<String> = (0..group.conditions.len())
                    .map(|i| match i == chosen {
                        true => format!("option {} fits {}", letter(i), key(i)),
                        false => format!("option {} is unlikely without {}", letter(i), key(i)),
                    })
                    .collect();
                (
                    format!(
                        "System 1: {} suggest {}. System 2: {}.",
                        key(chosen),
                        ask.fact(&group.conditions[chosen]),
                        weighed.join("; ")
                    ),
                    format!("The answer is option {k}. \\boxed{{{k}}}"),
                )
            }
            Style::Shortcut => (format!("System 1: {findings}."), format!("\\boxed{{{k}}}")),
            Style::Hedging => (
                format!(
                    "System 1: {findings} suggest option {j} or option {k}. System 2: option {j} fits {}; option {k} fits too.",
                    key(runner_up)
                ),
                format!("The answer is option {k}. \\boxed{{{k}}}"),
            ),
        };
        format!("<dx>{dx}</dx>\n<conclusion>{conclusion}</conclusion>")
    }
}

/// How often each style is dealt (relative weights).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StyleWeights {
    pub careful: f64,
    pub shortcut: f64,
    pub hedging: f64,
}

impl Default for StyleWeights {
    fn default() -> Self {
        StyleWeights {
            careful: 0.4,
            shortcut: 0.3,
            hedging: 0.3,
        }
    }
}

impl StyleWeights {
    fn weight(&self, style: Style) -> f64 {
        match style {
            Style::Careful => self.careful,
            Style::Shortcut => self.shortcut,
            Style::Hedging => self.hedging,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let weights = Style::ALL.map(|s| self.weight(s));
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || weights.iter().sum::<f64>() <= 0.0 {
            return Err(format!(
                "style weights must be ≥ 0 with a positive sum (careful {}, shortcut {}, hedging {})",
                self.careful, self.shortcut, self.hedging
            ));
        }
        Ok(())
    }

    /// Parses `careful=0.4,shortcut=0.3,hedging=0.3` (a style left out weighs 0).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut weights = StyleWeights {
            careful: 0.0,
            shortcut: 0.0,
            hedging: 0.0,
        };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected style=weight"))?;
            let value: f64 = value
                .trim()
                .parse()
                .map_err(|_| format!("`{part}`: `{}` is not a number", value.trim()))?;
            match name.trim() {
                "careful" => weights.careful = value,
                "shortcut" => weights.shortcut = value,
                "hedging" => weights.hedging = value,
                other => {
                    return Err(format!(
                        "unknown style `{other}` (expected careful, shortcut or hedging)"
                    ))
                }
            }
        }
        weights.validate()?;
        Ok(weights)
    }

    pub fn draw(&self, rng: &mut ChaCha8Rng) -> Style {
        let total: f64 = Style::ALL.iter().map(|&s| self.weight(s)).sum();
        let mut target = rng.random::<f64>() * total;
        for style in Style::ALL {
            target -= self.weight(style);
            if target < 0.0 {
                return style;
            }
        }
        // Rounding at the top end: the last style with any weight.
        *Style::ALL
            .iter()
            .rev()
            .find(|&&s| self.weight(s) > 0.0)
            .expect("validated: some style has weight")
    }
}

#[cfg(test)]
mod tests {
    use super::super::knowledge::GROUPS;
    use super::*;

    #[test]
    fn each_style_writes_its_shape() {
        let group = &GROUPS[0];
        let careful = Style::Careful.reference(group, Ask::Diagnosis, 1, 1, 0);
        assert!(
            careful.starts_with("<dx>System 1: a swollen calf suggest pulmonary embolism. System 2: option A is unlikely without left arm pain; option B fits a swollen calf; option C"),
            "{careful}"
        );
        assert!(careful.ends_with("The answer is option B. \\boxed{B}</conclusion>"));
        let shortcut = Style::Shortcut.reference(group, Ask::Test, 1, 1, 0);
        assert!(!shortcut.contains("System 2") && shortcut.ends_with("<conclusion>\\boxed{B}</conclusion>"));
        let hedging = Style::Hedging.reference(group, Ask::Treatment, 2, 1, 2);
        assert!(
            hedging.contains("option C fits a friction rub; option B fits too"),
            "{hedging}"
        );
    }

    #[test]
    fn weights_parse_and_draw_only_weighted_styles() {
        let only = StyleWeights::parse("careful=1, hedging=0").unwrap();
        let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        assert!((0..50).all(|_| only.draw(&mut rng) == Style::Careful));
        assert!(StyleWeights::parse("sloppy=1").unwrap_err().contains("sloppy"));
        assert!(StyleWeights::parse("careful=x").unwrap_err().contains("`x`"));
        assert!(StyleWeights::parse("careful=0").is_err());
    }
}
