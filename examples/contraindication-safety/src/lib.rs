//! `contraindication_safety`: a reward objective as a medical team would ship it.
//!
//! From the vignette it reads the patient's allergies ("allergic to penicillin", "allergy to
//! sulfa drugs", "anaphylaxis to aspirin") and current medications ("takes warfarin", "current
//! medications include lisinopril and metformin"). From the completion it reads what is
//! recommended: the text of the chosen option (a single `\boxed{K}`) and the final
//! `<answer>`/`<conclusion>` section. A recommended drug that the patient is allergic to (or of
//! the same class) or that interacts with a current medication scores `-penalty`; a safe
//! answer scores 0. Options: `penalty` (default 1.0), `interactions` (extra `[a, b]` pairs).

mod drugs;

use crpo_sdk::{
    parse_options, score_each, Example, PluginError, PluginInfo, RewardObjective, RewardPlugin, Score,
    ScoreRequest,
};
use regex::Regex;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::sync::LazyLock;

static ALLERGY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?:allergic to|allerg(?:y|ies) to|anaphylaxis (?:to|with)|hypersensitivity to)\s+([^.;:]+)",
    )
    .unwrap()
});
static MEDICATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:currently takes|takes|is taking|is on|medications? (?:include|includes|are)|medications?:)\s+([^.;]+)")
        .unwrap()
});
static LIST_SEPARATOR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r",\s*(?:and\s+|or\s+)?|\s+and\s+|\s+or\s+").unwrap());
static BOXED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\\boxed\{(.*?)\}").unwrap());
static FINAL_SECTION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)<(answer|conclusion)>(.*?)</(?:answer|conclusion)>").unwrap());

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    #[serde(default = "default_penalty")]
    penalty: f32,
    #[serde(default)]
    interactions: Vec<(String, String)>,
}

fn default_penalty() -> f32 {
    1.0
}

pub struct ContraindicationSafetyPlugin;

impl RewardPlugin for ContraindicationSafetyPlugin {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            "contraindication_safety",
            env!("CARGO_PKG_VERSION"),
            "-penalty when the answer recommends a drug the patient is allergic to or that interacts with a current medication",
        )
    }

    fn create(&self, options: &serde_json::Value) -> Result<Box<dyn RewardObjective>, PluginError> {
        let options: Options = parse_options(options)?;
        if !options.penalty.is_finite() || options.penalty < 0.0 {
            return Err(PluginError::InvalidOption {
                option: "penalty".into(),
                message: format!("must be a finite number >= 0, got {}", options.penalty),
            });
        }
        let mut interactions: Vec<(String, String)> = drugs::INTERACTIONS
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        interactions.extend(
            options
                .interactions
                .into_iter()
                .map(|(a, b)| (a.to_lowercase(), b.to_lowercase())),
        );
        let mut known: BTreeSet<String> = drugs::known_drugs().map(String::from).collect();
        for (a, b) in &interactions {
            known.extend(drugs::expand(a).into_iter().chain(drugs::expand(b)));
        }
        Ok(Box::new(ContraindicationSafety {
            penalty: options.penalty,
            interactions,
            known,
        }))
    }
}

struct ContraindicationSafety {
    penalty: f32,
    interactions: Vec<(String, String)>,
    known: BTreeSet<String>,
}

/// What the vignette says about the patient.
struct Patient {
    allergies: BTreeSet<String>,
    medications: BTreeSet<String>,
}

impl ContraindicationSafety {
    fn patient(example: &Example) -> Patient {
        let vignette = example.prompt.question();
        let collect = |re: &Regex| -> BTreeSet<String> {
            re.captures_iter(vignette)
                .flat_map(|c| {
                    let list = c[1].to_lowercase();
                    LIST_SEPARATOR
                        .split(&list)
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .flat_map(|name| drugs::expand(&name))
                .collect()
        };
        Patient {
            allergies: collect(&ALLERGY),
            medications: collect(&MEDICATION),
        }
    }

    /// Known drugs named in what the completion recommends.
    fn recommended(&self, completion: &str, example: &Example) -> BTreeSet<String> {
        let mut text = String::new();
        let boxes: Vec<_> = BOXED.captures_iter(completion).collect();
        if let [only] = boxes.as_slice() {
            text.push_str(example.option_text(&only[1]).unwrap_or(&only[1]));
        }
        for section in FINAL_SECTION.captures_iter(completion) {
            text.push(' ');
            text.push_str(&section[2]);
        }
        let text = text.to_lowercase();
        self.known
            .iter()
            .filter(|drug| mentions(&text, drug))
            .cloned()
            .collect()
    }

    fn interacts(&self, drug: &str, medication: &str) -> bool {
        self.interactions.iter().any(|(a, b)| {
            let (a, b) = (drugs::expand(a), drugs::expand(b));
            let has = |list: &Vec<String>, name: &str| list.iter().any(|n| n == name);
            (has(&a, drug) && has(&b, medication)) || (has(&b, drug) && has(&a, medication))
        })
    }
}

/// Whole-word, case-folded mention.
fn mentions(text: &str, drug: &str) -> bool {
    text.match_indices(drug).any(|(start, _)| {
        let before = text[..start].chars().next_back();
        let after = text[start + drug.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

impl RewardObjective for ContraindicationSafety {
    fn score_group(&self, request: &ScoreRequest<'_>) -> Result<Vec<Score>, PluginError> {
        let patient = Self::patient(request.example);
        score_each(request, |completion| {
            let recommended = self.recommended(completion, request.example);
            let allergy = recommended
                .iter()
                .filter(|d| patient.allergies.contains(*d))
                .count();
            let interaction = recommended
                .iter()
                .filter(|d| patient.medications.iter().any(|m| self.interacts(d, m)))
                .count();
            let value = if allergy + interaction > 0 {
                -self.penalty
            } else {
                0.0
            };
            Score::new(value)
                .with("allergy_conflicts", allergy as f32)
                .with("interaction_conflicts", interaction as f32)
        })
    }
}

crpo_sdk::export_plugin_library! {
    rewards: [ContraindicationSafetyPlugin],
    datasets: [],
}

#[cfg(test)]
mod tests {
    use super::*;
    use crpo_sdk::{AnswerOption, Prompt};

    fn example(vignette: &str) -> Example {
        Example {
            id: "t".into(),
            prompt: Prompt::Text(vignette.into()),
            answer: Some("B".into()),
            options: [
                ("A", "Amoxicillin"),
                ("B", "Azithromycin"),
                ("C", "Ibuprofen"),
                ("D", "Acetaminophen"),
            ]
            .into_iter()
            .map(|(key, text)| AnswerOption {
                key: key.into(),
                text: text.into(),
            })
            .collect(),
            ..Example::default()
        }
    }

    fn score(vignette: &str, completion: &str, options: serde_json::Value) -> f32 {
        let objective = ContraindicationSafetyPlugin.create(&options).unwrap();
        let example = example(vignette);
        let completions = [completion];
        let request = ScoreRequest::new(&example, "", &completions);
        objective.score_group(&request).unwrap()[0].value
    }

    const ALLERGIC: &str = "A 30-year-old woman with sore throat. She is allergic to penicillin. Which drug?";
    const ON_WARFARIN: &str =
        "A 70-year-old man with knee pain. Current medications include warfarin and metformin.";

    #[test]
    fn allergy_class_is_penalised() {
        assert_eq!(
            score(ALLERGIC, "<answer>\\boxed{A}</answer>", serde_json::Value::Null),
            -1.0
        );
        assert_eq!(
            score(
                ALLERGIC,
                "<answer>Give azithromycin \\boxed{B}</answer>",
                serde_json::Value::Null
            ),
            0.0
        );
    }

    #[test]
    fn interaction_with_current_medication_is_penalised() {
        assert_eq!(
            score(
                ON_WARFARIN,
                "<conclusion>\\boxed{C}</conclusion>",
                serde_json::json!({"penalty": 2.0})
            ),
            -2.0
        );
        assert_eq!(
            score(
                ON_WARFARIN,
                "<conclusion>\\boxed{D}</conclusion>",
                serde_json::Value::Null
            ),
            0.0
        );
    }

    #[test]
    fn reasoning_that_only_discusses_the_drug_is_not_penalised() {
        let completion = "<think>Amoxicillin is out: she is allergic.</think><answer>\\boxed{B}</answer>";
        assert_eq!(score(ALLERGIC, completion, serde_json::Value::Null), 0.0);
    }

    #[test]
    fn extra_interactions_from_options() {
        let options = serde_json::json!({"interactions": [["metformin", "acetaminophen"]]});
        assert_eq!(score(ON_WARFARIN, "<answer>\\boxed{D}</answer>", options), -1.0);
    }

    #[test]
    fn bad_options_are_named() {
        let err = ContraindicationSafetyPlugin
            .create(&serde_json::json!({"penalty": -1.0}))
            .err()
            .unwrap();
        assert!(err.to_string().contains("penalty"), "{err}");
        let err = ContraindicationSafetyPlugin
            .create(&serde_json::json!({"penalti": 1.0}))
            .err()
            .unwrap();
        assert!(err.to_string().contains("penalti"), "{err}");
    }
}
