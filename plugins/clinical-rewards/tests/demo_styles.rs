//! The demo task's reasoning styles score on the clinical objectives as its docs say
//! (`plugins/medical-datasets/src/demo/style.rs`): the demo's premise, checked on every
//! record of the shipped task, right and wrong references alike.

use crpo_plugins_datasets::demo::DemoTask;
use crpo_plugins_rewards::{accuracy::ACCURACY, consistency::CONSISTENCY, faithfulness::FAITHFULNESS};
use crpo_plugins_rewards::{clinical_reasoning::CLINICAL_REASONING, comprehensiveness::COMPREHENSIVENESS};

#[test]
fn every_reference_scores_as_its_style_says() {
    let files = DemoTask::default().generate().unwrap();
    for record in files.train.iter().chain(&files.eval) {
        let example = crpo_plugins_datasets::medqa::parse(record.as_object().unwrap(), "demo").unwrap();
        let text = example.reference_completion.clone().unwrap();
        let expected: [f32; 3] = match record["reference_style"].as_str().unwrap() {
            "careful" => [1.5, 1.0, 1.0],
            "hedging" => [1.0, 0.25, 0.5],
            "shortcut" => [0.0, 0.25, 0.0],
            other => panic!("unknown style {other}"),
        };
        let scored = [
            CLINICAL_REASONING.score_one(&example, &text),
            FAITHFULNESS.score_one(&example, &text),
            COMPREHENSIVENESS.score_one(&example, &text),
        ];
        assert_eq!(scored, expected, "{text}");
        let right = if record["reference_correct"] == true {
            1.0
        } else {
            0.0
        };
        assert_eq!(ACCURACY.score_one(&example, &text), right, "{text}");
        assert_eq!(CONSISTENCY.score_one(&example, &text), 1.0);
    }
}
