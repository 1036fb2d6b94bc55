//! The demo's knowledge table: twelve conditions in three groups by presenting complaint.
//! A question lists its group's four conditions (or their tests, or their treatments) as
//! options in this fixed order, so an option's letter is a learnable fact and the vignette's
//! findings decide which option is right. Each condition has a short `key` finding: what the
//! careful reasoning style cites for or against it.

pub struct Condition {
    pub name: &'static str,
    /// The vignette's findings.
    pub findings: &'static str,
    /// The finding that sets it apart from the rest of its group (a part of `findings`).
    pub key: &'static str,
    pub test: &'static str,
    pub treatment: &'static str,
}

pub struct Group {
    pub complaint: &'static str,
    pub conditions: [Condition; 4],
    /// Hard conditions: (index of the condition, index of the diagnosis an imperfect teacher
    /// confuses it with), both within this group.
    pub confusions: [(usize, usize); 2],
}

pub const GROUPS: [Group; 3] = [
    Group {
        complaint: "chest pain",
        conditions: [
            Condition {
                name: "acute myocardial infarction",
                findings: "crushing chest pain with sweating and left arm pain",
                key: "left arm pain",
                test: "electrocardiogram and troponin",
                treatment: "aspirin and coronary angiography",
            },
            Condition {
                name: "pulmonary embolism",
                findings: "pleuritic chest pain, sudden dyspnea and a swollen calf",
                key: "a swollen calf",
                test: "CT pulmonary angiography",
                treatment: "anticoagulation with heparin",
            },
            Condition {
                name: "acute pericarditis",
                findings: "sharp chest pain relieved by sitting forward and a friction rub",
                key: "a friction rub",
                test: "electrocardiogram with diffuse ST elevation",
                treatment: "colchicine and an NSAID",
            },
            Condition {
                name: "aortic dissection",
                findings: "tearing chest pain into the back and unequal arm pulses",
                key: "unequal arm pulses",
                test: "CT angiography of the aorta",
                treatment: "intravenous beta blockers and surgery",
            },
        ],
        confusions: [(3, 0), (2, 1)],
    },
    Group {
        complaint: "abdominal pain",
        conditions: [
            Condition {
                name: "acute appendicitis",
                findings: "fever and right lower quadrant pain that began at the navel",
                key: "right lower quadrant pain",
                test: "CT of the abdomen",
                treatment: "appendectomy",
            },
            Condition {
                name: "acute cholecystitis",
                findings: "right upper quadrant pain after fatty meals and a positive Murphy sign",
                key: "a positive Murphy sign",
                test: "ultrasound of the gallbladder",
                treatment: "cholecystectomy",
            },
            Condition {
                name: "acute pancreatitis",
                findings: "epigastric pain radiating to the back after heavy drinking",
                key: "heavy drinking",
                test: "serum lipase",
                treatment: "intravenous fluids and analgesia",
            },
            Condition {
                name: "diabetic ketoacidosis",
                findings: "abdominal pain with vomiting, polyuria and Kussmaul breathing",
                key: "Kussmaul breathing",
                test: "blood ketones and a blood gas",
                treatment: "intravenous insulin",
            },
        ],
        confusions: [(1, 0), (3, 2)],
    },
    Group {
        complaint: "headache",
        conditions: [
            Condition {
                name: "bacterial meningitis",
                findings: "fever, neck stiffness and photophobia",
                key: "neck stiffness",
                test: "lumbar puncture",
                treatment: "ceftriaxone and vancomycin",
            },
            Condition {
                name: "migraine",
                findings: "a throbbing one-sided headache with nausea after a visual aura",
                key: "a visual aura",
                test: "a headache diary",
                treatment: "a triptan",
            },
            Condition {
                name: "subarachnoid hemorrhage",
                findings: "a thunderclap headache during exertion",
                key: "a thunderclap headache",
                test: "CT of the head",
                treatment: "nimodipine and aneurysm repair",
            },
            Condition {
                name: "giant cell arteritis",
                findings: "a new temporal headache with jaw claudication in an older adult",
                key: "jaw claudication",
                test: "temporal artery biopsy",
                treatment: "high-dose prednisone",
            },
        ],
        confusions: [(2, 1), (3, 0)],
    },
];

/// What a question asks for; its options are the group's facts of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    Diagnosis,
    Test,
    Treatment,
}

impl Ask {
    pub const ALL: [Ask; 3] = [Ask::Diagnosis, Ask::Test, Ask::Treatment];

    pub fn fact(self, condition: &Condition) -> &'static str {
        match self {
            Ask::Diagnosis => condition.name,
            Ask::Test => condition.test,
            Ask::Treatment => condition.treatment,
        }
    }

    pub fn question(self) -> &'static str {
        match self {
            Ask::Diagnosis => "Which of the following is the most likely diagnosis?",
            Ask::Test => "Which of the following is the best initial test?",
            Ask::Treatment => "Which of the following is the most appropriate management?",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Ask::Diagnosis => "diagnosis",
            Ask::Test => "test",
            Ask::Treatment => "treatment",
        }
    }

    pub fn from_label(label: &str) -> Option<Ask> {
        Ask::ALL.into_iter().find(|a| a.label() == label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naming is whole-word and case-insensitive (clinical_reasoning's rule): an option text
    /// inside another's, or a key finding naming an option, would blur what the rules see.
    #[test]
    fn no_option_text_names_another_and_no_key_names_an_option() {
        let named = |needle: &str, hay: &str| {
            let (needle, hay) = (needle.to_lowercase(), hay.to_lowercase());
            hay.match_indices(&needle).any(|(at, _)| {
                let before = hay[..at].chars().next_back();
                let after = hay[at + needle.len()..].chars().next();
                let edge = |c: Option<char>| c.is_none_or(|c| !c.is_ascii_alphanumeric());
                edge(before) && edge(after)
            })
        };
        for group in &GROUPS {
            for ask in Ask::ALL {
                for a in &group.conditions {
                    for b in &group.conditions {
                        if a.name != b.name {
                            assert!(
                                !named(ask.fact(a), ask.fact(b)),
                                "{} in {}",
                                ask.fact(a),
                                ask.fact(b)
                            );
                        }
                        assert!(!named(ask.fact(a), b.key), "{} in key {}", ask.fact(a), b.key);
                        assert!(
                            !named(ask.fact(a), b.findings),
                            "{} in {}",
                            ask.fact(a),
                            b.findings
                        );
                    }
                }
            }
            for condition in &group.conditions {
                assert!(condition.findings.contains(condition.key), "{}", condition.key);
            }
            for (hard, confused) in group.confusions {
                assert_ne!(hard, confused);
            }
        }
    }
}
