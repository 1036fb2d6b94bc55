//! The demo shows what CRPO does: a shortened `crpo-host demo`, run as a user runs it, moves
//! the way the full one does (docs/demo.md) — both arms answer more questions right than the
//! cold start, and CRPO's reasoning weighs more options and supports its answer more often
//! than GRPO's. Slow (a few minutes in a debug build): it trains two real arms.

use serde_json::Value;

fn objective(report: &Value, label: &str, decoding_greedy: bool, name: &str) -> f64 {
    let evaluation = report["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["label"] == label && (e["temperature"].as_f64() == Some(0.0)) == decoding_greedy)
        .unwrap_or_else(|| panic!("no evaluation of {label}"));
    match name {
        "acc" => evaluation["accuracy"].as_f64().unwrap(),
        _ => evaluation["objectives"][name].as_f64().unwrap(),
    }
}

#[test]
fn a_shortened_demo_shows_crpo_and_grpo_part_ways() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("demo");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_crpo-host"))
        .args([
            "demo",
            "--out",
            dir.to_str().unwrap(),
            "--steps",
            "80",
            "--eval-samples",
            "4",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{}",
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{stdout}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert!(
        report["evaluation_reward"]
            .as_str()
            .is_some_and(|r| r.starts_with("crpo-full: 10")),
        "the one weighting every row's reward uses is named: {report}"
    );
    let cold = objective(&report, "cold start (SFT)", true, "acc");
    for arm in ["GRPO", "CRPO"] {
        let acc = objective(&report, arm, true, "acc");
        assert!(
            acc > cold + 0.1,
            "{arm} answers {acc:.3} right, the cold start {cold:.3}"
        );
    }
    for name in ["comprehensiveness", "faithfulness"] {
        for greedy in [true, false] {
            let (crpo, grpo) = (
                objective(&report, "CRPO", greedy, name),
                objective(&report, "GRPO", greedy, name),
            );
            assert!(
                crpo > grpo + 0.1,
                "{name} (greedy: {greedy}): CRPO {crpo:.3}, GRPO {grpo:.3}"
            );
        }
    }
    assert_eq!(report["verdict"]["effect_shown"], true, "{}", report["verdict"]);
    assert!(
        stdout.contains("Verdict: CRPO kept the reasoning GRPO gave up"),
        "the demo says what it showed"
    );
    // The report shows GRPO's failure mode as a trade-off: an objective falls as accuracy rises.
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let grpo = html
        .split("<h3>grpo</h3>")
        .nth(1)
        .and_then(|rest| rest.split("<h3>").next())
        .expect("a trade-off section for the GRPO arm");
    assert!(
        grpo.contains("while <b>accuracy</b> rose"),
        "no flag for GRPO: {grpo}"
    );
}
