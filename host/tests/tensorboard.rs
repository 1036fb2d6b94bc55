//! A short real run's TensorBoard files, read back by Python's `tensorboard` package (the
//! set-up installs it with CRPO_WITH_TENSORBOARD=1, as `.ci/run` does), equal metrics.jsonl.

#[path = "support/mod.rs"]
mod support;

use crpo_host::train::tensorboard::scalars_of;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Reads a run directory with TensorBoard's classic reader.
const READ_BACK: &str = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "tensors": 0})
acc.Reload()
tags = acc.Tags()
out = {"scalars": {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags["scalars"]},
       "texts": {t: [[e.step, e.tensor_proto.string_val[0].decode()] for e in acc.Tensors(t)] for t in tags["tensors"]}}
print(json.dumps(out))
"#;

/// Reads it with the reader TensorBoard's Python server uses (`--load_fast=false`), which
/// ignores a run's first SessionLog START: a resumed file's START must not be the first.
const READ_BACK_AS_THE_SERVER: &str = r#"
import json, sys
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.util import tensor_util
acc = EventAccumulator(sys.argv[1], size_guidance={"tensors": 0})
acc.Reload()
out = {"scalars": {}, "texts": {}}
for t in acc.Tags()["tensors"]:
    plugin = acc.SummaryMetadata(t).plugin_data.plugin_name
    events = acc.Tensors(t)
    if plugin == "scalars":
        out["scalars"][t] = [[e.step, float(tensor_util.make_ndarray(e.tensor_proto).item())] for e in events]
    else:
        out["texts"][t] = [[e.step, e.tensor_proto.string_val[0].decode()] for e in events]
print(json.dumps(out))
"#;

fn train(dir: &Path, max_steps: usize, resume: bool) {
    let data = support::workspace_root().join("data/demo");
    std::fs::write(
        dir.join("run.toml"),
        format!(
            r#"
[run]
output_dir = "run"
max_steps = {max_steps}
save_steps = 2
sample_steps = 2
[model]
path = "model"
[data]
path = "{}"
[reward]
preset = "crpo"
[algorithm]
num_generations = 2
prompts_per_step = 2
mini_batch_size = 4
gradient_accumulation_steps = 1
max_completion_length = 8
beta = 0.0
"#,
            data.join("train.jsonl").display()
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_crpo-host"));
    command.args(["train", "--config", "run.toml"]).current_dir(dir);
    if resume {
        command.arg("--resume");
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn tensorboard_reads_back_what_metrics_jsonl_holds() {
    let python = match support::venv_python_with("tensorboard", "CRPO_WITH_TENSORBOARD") {
        Ok(python) => python,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    crpo_plugins_policy::presets::write_tiny(&dir.path().join("model"), 0).unwrap();
    // A run to step 3, then resumed from its step-2 checkpoint to step 4: TensorBoard must show
    // each step once, as metrics.jsonl does.
    train(dir.path(), 3, false);
    std::fs::remove_dir_all(dir.path().join("run/checkpoints/step-000003")).unwrap();
    train(dir.path(), 4, true);
    let run_dir = dir.path().join("run");
    for reader in [READ_BACK, READ_BACK_AS_THE_SERVER] {
        let stdout = support::python_output(&python, &["-c".as_ref(), reader.as_ref(), run_dir.as_os_str()]);
        let read: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
        assert_equals_metrics(&run_dir, &read);
    }
}

/// What a reader gave equals metrics.jsonl: the same tags, each step once, the same values,
/// and the samples as text at steps 2 and 4.
fn assert_equals_metrics(run_dir: &Path, read: &serde_json::Value) {
    let mut expected: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    for line in std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
    {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let step = record["step"].as_u64().unwrap();
        for (tag, value) in scalars_of("train", &record) {
            expected.entry(tag).or_default().push((step, value));
        }
    }
    assert!(expected.contains_key("train/objectives/accuracy/mean"));
    // beta = 0: no reference runs, so no KL is measured or written (TRL's too).
    assert!(!expected.contains_key("train/kl"));
    assert!(expected.contains_key("train/clip_ratio/low"));
    let scalars = read["scalars"].as_object().unwrap();
    assert_eq!(
        scalars.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the same tags"
    );
    for (tag, points) in &expected {
        let got: Vec<(u64, f64)> = scalars[tag]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
            .collect();
        assert_eq!(
            got.iter().map(|p| p.0).collect::<Vec<_>>(),
            [1, 2, 3, 4],
            "{tag}: each step once"
        );
        for ((_, want), (_, have)) in points.iter().zip(&got) {
            let tolerance = 1e-6 * want.abs().max(1.0);
            assert!((want - have).abs() <= tolerance, "{tag}: {want} vs {have}");
        }
    }
    let samples = read["texts"]["samples/text_summary"]
        .as_array()
        .or_else(|| read["texts"]["samples"].as_array())
        .unwrap_or_else(|| panic!("no samples text: {}", read["texts"]));
    assert_eq!(samples.len(), 2, "steps 2 and 4");
    assert!(samples[0][1].as_str().unwrap().contains("| completion | gold |"));
}
