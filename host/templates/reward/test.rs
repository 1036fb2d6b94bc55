use crpo_sdk::reward_fn;
use crpo_sdk::testing::{example_from_json, score_one};
use serde_json::json;
use {{ident}}::{{ident}};

const RECORD: &str = r#"{"question": "Which drug reverses heparin?",
    "options": {"A": "Vitamin K", "B": "Protamine sulfate"}, "answer_idx": "B"}"#;

#[test]
fn scores_naming_and_boxing_the_gold_option() {
    let plugin = reward_fn!({{ident}}, "test");
    let example = example_from_json(RECORD).unwrap();
    let score = |options, completion| score_one(&plugin, &options, &example, completion).unwrap().value;
    let both = "<think>Protamine sulfate binds heparin.</think><answer>\\boxed{B}</answer>";
    assert_eq!(score(json!(null), both), 1.5);
    assert_eq!(score(json!({"bonus": 1.0}), both), 2.0);
    assert_eq!(score(json!(null), "<think>Vitamin K.</think>\\boxed{B}"), 0.0);
    let unknown = score_one(&plugin, &json!({"bonsu": 1}), &example, both).unwrap_err();
    assert!(unknown.to_string().contains("bonsu"));
}
