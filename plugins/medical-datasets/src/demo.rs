//! The bundled demo set: synthetic clinical multiple-choice questions in MedQA format, made
//! from a small knowledge table (condition → findings, key test, first-line treatment).
//! Each question asks for the diagnosis, the test or the treatment of a vignette; the wrong
//! options are the same kind of fact about other conditions. Each record carries a reference
//! completion in the paper's `<dx>`/`<conclusion>` format for the supervised cold start.
//! `data/demo/*.jsonl` in the repository are this module's output (a test checks it).

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

pub struct Condition {
    pub name: &'static str,
    pub findings: &'static str,
    pub test: &'static str,
    pub treatment: &'static str,
}

pub const KNOWLEDGE: [Condition; 12] = [
    Condition {
        name: "community-acquired pneumonia",
        findings: "fever, productive cough and focal crackles",
        test: "chest radiograph showing lobar consolidation",
        treatment: "amoxicillin or a macrolide",
    },
    Condition {
        name: "acute myocardial infarction",
        findings: "crushing substernal chest pain radiating to the left arm",
        test: "ST elevation on the electrocardiogram and raised troponin",
        treatment: "aspirin and emergent percutaneous coronary intervention",
    },
    Condition {
        name: "acute appendicitis",
        findings: "periumbilical pain migrating to the right lower quadrant",
        test: "ultrasound or CT of the abdomen",
        treatment: "appendectomy",
    },
    Condition {
        name: "hypothyroidism",
        findings: "weight gain, cold intolerance and constipation",
        test: "raised TSH with low free T4",
        treatment: "levothyroxine",
    },
    Condition {
        name: "asthma exacerbation",
        findings: "wheeze, chest tightness and nocturnal cough",
        test: "reduced peak flow reversible with bronchodilators",
        treatment: "inhaled salbutamol and systemic corticosteroids",
    },
    Condition {
        name: "urinary tract infection",
        findings: "dysuria, frequency and suprapubic pain",
        test: "urinalysis with nitrites and leukocyte esterase",
        treatment: "nitrofurantoin",
    },
    Condition {
        name: "pulmonary embolism",
        findings: "sudden dyspnea, pleuritic chest pain and tachycardia",
        test: "CT pulmonary angiography",
        treatment: "anticoagulation with heparin",
    },
    Condition {
        name: "diabetic ketoacidosis",
        findings: "polyuria, vomiting, abdominal pain and Kussmaul breathing",
        test: "high anion gap metabolic acidosis with ketonemia",
        treatment: "intravenous fluids and insulin",
    },
    Condition {
        name: "iron deficiency anemia",
        findings: "fatigue, pallor and pica",
        test: "low ferritin with microcytic indices",
        treatment: "oral iron and a search for blood loss",
    },
    Condition {
        name: "bacterial meningitis",
        findings: "fever, headache, neck stiffness and photophobia",
        test: "lumbar puncture with neutrophilic pleocytosis",
        treatment: "ceftriaxone, vancomycin and dexamethasone",
    },
    Condition {
        name: "heart failure",
        findings: "orthopnea, ankle edema and raised jugular venous pressure",
        test: "echocardiography showing reduced ejection fraction",
        treatment: "diuretics, ACE inhibitors and beta blockers",
    },
    Condition {
        name: "gout",
        findings: "acute monoarthritis of the first metatarsophalangeal joint",
        test: "negatively birefringent crystals in joint fluid",
        treatment: "colchicine or an NSAID",
    },
];

#[derive(Clone, Copy)]
enum Ask {
    Diagnosis,
    Test,
    Treatment,
}

impl Ask {
    fn fact(self, condition: &Condition) -> &'static str {
        match self {
            Ask::Diagnosis => condition.name,
            Ask::Test => condition.test,
            Ask::Treatment => condition.treatment,
        }
    }

    fn question(self) -> &'static str {
        match self {
            Ask::Diagnosis => "Which of the following is the most likely diagnosis?",
            Ask::Test => "Which of the following is the best initial test?",
            Ask::Treatment => "Which of the following is the most appropriate first-line management?",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Ask::Diagnosis => "diagnosis",
            Ask::Test => "test",
            Ask::Treatment => "treatment",
        }
    }
}

const PEOPLE: [&str; 6] = ["man", "woman", "man", "woman", "boy", "girl"];
const SETTINGS: [&str; 4] = [
    "comes to the emergency department",
    "is seen in the clinic",
    "presents to his or her physician",
    "is brought to the hospital",
];

/// One MedQA-format record.
fn record(rng: &mut ChaCha8Rng, index: usize, ask: Ask) -> Value {
    let condition = &KNOWLEDGE[index];
    let age = match rng.random_range(0..6usize) {
        4 | 5 => rng.random_range(8..17),
        _ => rng.random_range(19..80),
    };
    let person = PEOPLE.choose(rng).copied().unwrap_or("patient");
    let person = if age < 18 {
        if rng.random_bool(0.5) {
            "boy"
        } else {
            "girl"
        }
    } else {
        person
    };
    let person = if age >= 18 && (person == "boy" || person == "girl") {
        "woman"
    } else {
        person
    };
    let setting = SETTINGS.choose(rng).copied().unwrap_or("is seen");
    let question = format!(
        "A {age}-year-old {person} {setting} with {}. {}",
        condition.findings,
        ask.question()
    );
    let option_count = if rng.random_bool(0.5) { 4 } else { 5 };
    let mut others: Vec<usize> = (0..KNOWLEDGE.len()).filter(|&i| i != index).collect();
    others.shuffle(rng);
    let mut choices: Vec<usize> = others[..option_count - 1].to_vec();
    choices.push(index);
    choices.shuffle(rng);
    let letters = ["A", "B", "C", "D", "E"];
    let options: serde_json::Map<String, Value> = choices
        .iter()
        .zip(letters)
        .map(|(&i, letter)| (letter.to_string(), json!(ask.fact(&KNOWLEDGE[i]))))
        .collect();
    let gold = letters[choices
        .iter()
        .position(|&i| i == index)
        .expect("the answer is an option")];
    let others: Vec<String> = choices
        .iter()
        .zip(letters)
        .filter(|(&i, _)| i != index)
        .map(|(_, letter)| format!("option {letter}"))
        .collect();
    // Short, and naming options by letter, on purpose: the demo's small model learns the
    // format in minutes on a CPU, and which letter is right is what the RL step must learn.
    let reference = format!(
        "<dx>System 1: {} suggest {}. System 2: option {gold} fits {}; {} do not.</dx>\n<conclusion>The answer is option {gold}. \\boxed{{{gold}}}</conclusion>",
        condition.findings,
        condition.name,
        condition.name,
        others.join(", "),
    );
    json!({
        "question": question,
        "answer": ask.fact(condition),
        "options": options,
        "answer_idx": gold,
        "meta_info": format!("demo-{}", ask.label()),
        "reference_completion": reference,
    })
}

/// `per_condition` questions of each kind for each condition, in a seeded order.
pub fn generate(seed: u64, per_condition: usize) -> Vec<Value> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut records = Vec::new();
    for _ in 0..per_condition {
        for index in 0..KNOWLEDGE.len() {
            for ask in [Ask::Diagnosis, Ask::Test, Ask::Treatment] {
                records.push(record(&mut rng, index, ask));
            }
        }
    }
    records.shuffle(&mut rng);
    records
}

/// The records as JSONL text.
pub fn to_jsonl(records: &[Value]) -> String {
    records.iter().map(|r| format!("{r}\n")).collect()
}

/// The shipped files: (name, seed, questions of each kind per condition).
pub const FILES: [(&str, u64, usize); 2] = [("train.jsonl", 1, 6), ("eval.jsonl", 2, 1)];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_valid_medqa_with_the_gold_among_the_options() {
        for record in generate(3, 2) {
            let map = record.as_object().unwrap();
            let example = crate::medqa::parse(map, "demo:1").unwrap();
            let gold = example.answer.clone().unwrap();
            assert_eq!(example.option_text(&gold), record["answer"].as_str());
            let reference = example.reference_completion.unwrap();
            assert!(
                reference.ends_with(&format!("\\boxed{{{gold}}}</conclusion>")),
                "{reference}"
            );
            assert!((4..=5).contains(&example.options.len()));
        }
    }

    #[test]
    fn the_shipped_files_are_this_generator_s_output() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/demo");
        for (name, seed, per_condition) in FILES {
            let shipped = std::fs::read_to_string(dir.join(name)).unwrap();
            assert_eq!(
                shipped,
                to_jsonl(&generate(seed, per_condition)),
                "data/demo/{name} is stale"
            );
        }
    }
}
