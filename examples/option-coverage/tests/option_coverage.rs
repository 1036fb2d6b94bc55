//! The objective scored through its plugin, as the host scores it.

use crpo_sdk::reward_fn;
use crpo_sdk::testing::{example_from_json, score_one};
use option_coverage::option_coverage;
use serde_json::json;

const RECORD: &str = r#"{"question": "A 60-year-old with crushing chest pain…?",
    "options": {"A": "Myocardial infarction", "B": "Pericarditis", "C": "Aortic dissection"},
    "answer_idx": "A"}"#;

#[test]
fn scores_the_share_of_options_named() {
    let plugin = reward_fn!(option_coverage, "test");
    let example = example_from_json(RECORD).unwrap();
    let completion = "<think>ST elevation fits myocardial infarction; pericarditis is unlikely.\
                      Option C does not fit.</think><answer>\\boxed{A}</answer>";
    let all = score_one(&plugin, &json!(null), &example, completion).unwrap();
    assert_eq!((all.value, all.diagnostics[0].1), (1.0, 3.0));
    let others = score_one(
        &plugin,
        &json!({"others_only": true}),
        &example,
        "<think>Pericarditis fits.</think> \\boxed{A}",
    );
    assert_eq!(others.unwrap().value, 0.5);
    assert_eq!(
        score_one(&plugin, &json!(null), &example, "\\boxed{A}")
            .unwrap()
            .value,
        0.0
    );
    let unknown = score_one(&plugin, &json!({"others": true}), &example, "x").unwrap_err();
    assert_eq!(unknown.to_string().split(':').next(), Some("option `others`"));
}
