//! The demo task's reasoning styles score on the clinical objectives as its docs say
//! (`host/src/demo_task/style.rs`): the demo's premise, checked on every record of the shipped
//! task, right and wrong references alike, read and scored through the plugins a run uses.

use crpo_host::demo_task::{to_jsonl, DemoTask};
use crpo_host::plugins::{ConfiguredObjective, ObjectiveSpec, PluginRegistry};
use crpo_sdk::{DatasetSource, ScoreRequest};

#[test]
fn every_reference_scores_as_its_style_says() {
    let registry = PluginRegistry::builtin_only();
    let files = DemoTask::default().generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.jsonl");
    std::fs::write(&path, to_jsonl(&[files.train, files.eval].concat())).unwrap();
    let read = registry
        .dataset("medqa")
        .unwrap()
        .plugin()
        .read(&DatasetSource {
            path,
            options: serde_json::Value::Null,
        })
        .unwrap();
    assert!(read.malformed.is_empty());
    let objective = |plugin: &str| {
        let spec = ObjectiveSpec {
            name: None,
            plugin: plugin.into(),
            weight: None,
            options: serde_json::Value::Null,
            ..ObjectiveSpec::default()
        };
        ConfiguredObjective::create(&registry, &spec).unwrap()
    };
    let names = [
        "clinical_reasoning",
        "faithfulness",
        "comprehensiveness",
        "accuracy",
        "consistency",
    ];
    let objectives: Vec<_> = names.iter().map(|n| objective(n)).collect();
    for example in &read.examples {
        let text = example.reference_completion.clone().unwrap();
        let right = if example.metadata["reference_correct"] == true {
            1.0
        } else {
            0.0
        };
        let expected: [f32; 5] = match example.metadata["reference_style"].as_str().unwrap() {
            "careful" => [1.5, 1.0, 1.0, right, 1.0],
            "hedging" => [1.0, 0.25, 0.5, right, 1.0],
            "shortcut" => [0.0, 0.25, 0.0, right, 1.0],
            other => panic!("unknown style {other}"),
        };
        let completions = [text.as_str()];
        let request = ScoreRequest::new(example, "", &completions);
        let scored: Vec<f32> = objectives
            .iter()
            .map(|o| o.score_group(&request).unwrap()[0].value)
            .collect();
        assert_eq!(scored, expected, "{text}");
    }
}
