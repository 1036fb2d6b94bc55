//! Plugins loaded from `--plugins DIR` through the real loader: they work exactly like
//! built-ins, and every kind of bad library is refused with a clear error, never a crash.

mod support;

use crpo_host::plugins::{ConfiguredObjective, ObjectiveSpec, Origin, PluginRegistry};
use crpo_sdk::{AnswerOption, DatasetSource, Example, Prompt, ScoreRequest};
use serde_json::json;
use support::{plugin_dir, plugin_library};

fn vignette_example() -> Example {
    Example {
        id: "v1".into(),
        prompt: Prompt::Text(
            "A 68-year-old man on chronic anticoagulation. He takes warfarin. Best analgesic?".into(),
        ),
        answer: Some("B".into()),
        options: [("A", "Ibuprofen"), ("B", "Acetaminophen")]
            .into_iter()
            .map(|(key, text)| AnswerOption {
                key: key.into(),
                text: text.into(),
            })
            .collect(),
        ..Example::default()
    }
}

fn spec(plugin: &str, name: Option<&str>, options: serde_json::Value) -> ObjectiveSpec {
    ObjectiveSpec {
        name: name.map(String::from),
        plugin: plugin.into(),
        weight: None,
        options,
        ..ObjectiveSpec::default()
    }
}

fn score(objective: &ConfiguredObjective, completions: &[&str]) -> Result<Vec<f32>, String> {
    let example = vignette_example();
    let request = ScoreRequest::new(&example, "", completions);
    objective
        .score_group(&request)
        .map(|scores| scores.into_iter().map(|s| s.value).collect())
        .map_err(|e| e.to_string())
}

fn load_err(dir: &std::path::Path) -> String {
    match PluginRegistry::load(&[dir.to_path_buf()]) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn loaded_reward_plugin_scores_like_its_builtin_twin() {
    let dir = plugin_dir(&["contraindication_safety"]);
    let registry = PluginRegistry::load(&[dir.path().to_path_buf()]).unwrap();
    let registered = registry.reward("contraindication_safety").unwrap();
    assert!(
        matches!(&registered.origin, Origin::Library { path, library, sdk }
        if path.starts_with(dir.path()) && library == "contraindication-safety 0.1.0"
            && sdk == crpo_sdk::SDK_VERSION)
    );
    let loaded =
        ConfiguredObjective::create(&registry, &spec("contraindication_safety", None, json!(null))).unwrap();
    let completions = [
        "<answer>\\boxed{A}</answer>",
        "<answer>\\boxed{B}</answer>",
        "no answer",
    ];
    assert_eq!(score(&loaded, &completions).unwrap(), vec![-1.0, 0.0, 0.0]);

    // Built-ins come along, and the same objective compiled in gives the same scores.
    assert!(registry.reward("accuracy").is_ok());
    let builtin = crpo_sdk::RewardPlugin::create(
        &contraindication_safety::ContraindicationSafetyPlugin,
        &json!(null),
    )
    .unwrap();
    let example = vignette_example();
    let request = ScoreRequest::new(&example, "", &completions);
    let direct: Vec<f32> = builtin
        .score_group(&request)
        .unwrap()
        .into_iter()
        .map(|s| s.value)
        .collect();
    assert_eq!(direct, vec![-1.0, 0.0, 0.0]);
}

#[test]
fn one_plugin_serves_two_objectives_with_different_options() {
    let dir = plugin_dir(&["contraindication_safety"]);
    let registry = PluginRegistry::load(&[dir.path().to_path_buf()]).unwrap();
    let strict = ConfiguredObjective::create(
        &registry,
        &spec("contraindication_safety", Some("strict"), json!({"penalty": 5.0})),
    )
    .unwrap();
    let mild = ConfiguredObjective::create(
        &registry,
        &spec("contraindication_safety", Some("mild"), json!({"penalty": 0.5})),
    )
    .unwrap();
    assert_eq!((strict.name.as_str(), mild.name.as_str()), ("strict", "mild"));
    assert_eq!(
        score(&strict, &["<answer>\\boxed{A}</answer>"]).unwrap(),
        vec![-5.0]
    );
    assert_eq!(
        score(&mild, &["<answer>\\boxed{A}</answer>"]).unwrap(),
        vec![-0.5]
    );
}

#[test]
fn bad_option_is_named_with_the_plugin() {
    let dir = plugin_dir(&["contraindication_safety"]);
    let registry = PluginRegistry::load(&[dir.path().to_path_buf()]).unwrap();
    let err = ConfiguredObjective::create(
        &registry,
        &spec("contraindication_safety", Some("safety"), json!({"penalti": 2})),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("objective `safety`") && err.contains("contraindication_safety"),
        "{err}"
    );
    assert!(err.contains("option `penalti`"), "{err}");
}

#[test]
fn loaded_dataset_plugin_reads_and_reports_bad_rows() {
    let dir = plugin_dir(&["csv_dataset"]);
    let registry = PluginRegistry::load(&[dir.path().to_path_buf()]).unwrap();
    let csv = dir.path().join("questions.csv");
    std::fs::write(
        &csv,
        "stem,a,b,key\nWhich drug?,Aspirin,Heparin,B\nBroken row,x,y,Z\n",
    )
    .unwrap();
    let source = DatasetSource {
        path: csv.clone(),
        options: json!({"question": "stem", "answer": "key", "choices": {"A": "a", "B": "b"}}),
    };
    let read = registry
        .dataset("csv_mcq")
        .unwrap()
        .plugin()
        .read(&source)
        .unwrap();
    assert_eq!(read.examples.len(), 1);
    assert_eq!(read.examples[0].option_text("B"), Some("Heparin"));
    assert_eq!(read.malformed.len(), 1);
    let bad = &read.malformed[0];
    assert_eq!((bad.line, bad.field.as_str()), (3, "key"));
    assert!(bad.file.ends_with("questions.csv"));
}

#[test]
fn panicking_plugin_fails_the_call_and_the_host_goes_on() {
    let dir = plugin_dir(&["misbehaving_rewards"]);
    let registry = PluginRegistry::load(&[dir.path().to_path_buf()]).unwrap();
    let objective = ConfiguredObjective::create(
        &registry,
        &spec("misbehaving", Some("boom"), json!({"fault": "panic"})),
    )
    .unwrap();
    let err = score(&objective, &["a", "b"]).unwrap_err();
    assert!(
        err.contains("objective `boom`") && err.contains("panicked") && err.contains("out of range"),
        "{err}"
    );
    assert!(
        err.contains("misbehaving_rewards"),
        "names the library file: {err}"
    );
    // Still alive, and the plugin can be called again.
    assert!(score(&objective, &["c"]).is_err());

    // From the command line: one clean error naming where it panicked, and not the plugin's
    // own "thread '<unnamed>' panicked at …" line before it.
    let input = dir.path().join("completions.jsonl");
    let record = serde_json::json!({"example": {"id": "q1", "prompt": {"text": "Which?"}, "answer": "A"}, "completion": "\\boxed{A}"});
    std::fs::write(&input, format!("{record}\n")).unwrap();
    // `score` with the plugin at `fault`, and `extra` arguments.
    let score_cli = |fault: &str, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_crpo-host"))
            .args(["--plugins", dir.path().to_str().unwrap(), "score"])
            .args(["--objectives", "misbehaving", "--options"])
            .arg(format!(r#"{{"misbehaving": {{"fault": "{fault}"}}}}"#))
            .arg("--input")
            .arg(&input)
            .args(extra)
            .env_remove("CRPO_PLUGIN_PATH")
            .output()
            .unwrap()
    };
    let output = score_cli("panic", &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("panicked at ") && stderr.contains("src/lib.rs:") && !stderr.contains("thread '"),
        "{stderr}"
    );

    // A plugin that calls exit(0) mid-command: a failure that says so, not a silent success
    // with no output written.
    let output_file = dir.path().join("scored.jsonl");
    let output = score_cli("exit", &["--output", output_file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ended by a call to exit() before `score` finished"),
        "{stderr}"
    );
    assert!(!output_file.exists());

    // Isolated, the worker's exit and a hang are failures that name the objective.
    let isolated = |fault: &str| {
        let output = score_cli(fault, &["--isolation", "process", "--timeout-s", "3"]);
        assert_eq!(output.status.code(), Some(1));
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    let exited = isolated("exit");
    assert!(
        exited.contains("misbehaving") && exited.contains("worker process exited"),
        "{exited}"
    );
    let hung = isolated("hang");
    assert!(hung.contains("no answer within 3 s"), "{hung}");
    let refused = score_cli("none", &["--timeout-s", "0"]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--timeout-s must be a number of seconds above 0"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn non_finite_and_miscounted_scores_are_refused() {
    let dir = plugin_dir(&["misbehaving_rewards"]);
    let registry = PluginRegistry::load(&[dir.path().to_path_buf()]).unwrap();
    let cases = [
        ("nan", "non-finite score NaN"),
        ("inf", "non-finite score inf"),
        ("too_few", "returned 1 scores for 2 completions"),
        ("too_many", "returned 3 scores for 2 completions"),
    ];
    for (fault, expected) in cases {
        let objective =
            ConfiguredObjective::create(&registry, &spec("misbehaving", None, json!({"fault": fault})))
                .unwrap();
        let err = score(&objective, &["a", "b"]).unwrap_err();
        assert!(
            err.contains(expected) && err.contains("objective `misbehaving`"),
            "{fault}: {err}"
        );
    }
}

#[test]
fn file_that_is_not_a_library_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a library, and ignored").unwrap();
    std::fs::write(dir.path().join("junk.so"), b"\x7fELF but not really").unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("junk.so") && err.contains("not a loadable library"),
        "{err}"
    );
}

#[test]
fn a_cut_short_copy_of_a_plugin_is_refused_not_a_crash() {
    let whole = std::fs::read(plugin_library("contraindication_safety")).unwrap();
    for length in [64, 4096, whole.len() / 2, whole.len() - 1] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("libcut.so"), &whole[..length]).unwrap();
        let err = load_err(dir.path());
        assert!(
            err.contains("libcut.so")
                && (err.contains("cut short") || err.contains("not a loadable library")),
            "{length} bytes: {err}"
        );
    }
}

#[test]
fn entries_named_like_libraries_that_are_not_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("folder.so")).unwrap();
    assert!(load_err(dir.path()).contains("folder.so") && load_err(dir.path()).contains("a directory"));
    std::fs::remove_dir(dir.path().join("folder.so")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("gone.so"), dir.path().join("libdangling.so")).unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("libdangling.so") && err.contains("broken link"),
        "{err}"
    );
}

#[test]
fn library_without_crpo_root_module_is_refused_by_name() {
    let dir = plugin_dir(&["not_a_crpo_plugin"]);
    let err = load_err(dir.path());
    assert!(
        err.contains("libnot_a_crpo_plugin.so") && err.contains("not a crpo plugin library"),
        "{err}"
    );
}

#[test]
fn plugin_of_another_sdk_major_version_is_refused() {
    let dir = plugin_dir(&["abi_v2_plugin"]);
    let err = load_err(dir.path());
    assert!(err.contains("libabi_v2_plugin.so"), "{err}");
    assert!(
        err.contains("built against crpo-sdk 2.0.0") && err.contains("crpo-sdk 1.x"),
        "{err}"
    );
}

#[test]
fn plugin_with_a_different_type_layout_is_refused() {
    let dir = plugin_dir(&["layout_mismatch_plugin"]);
    let err = load_err(dir.path());
    assert!(
        err.contains("liblayout_mismatch_plugin.so") && err.contains("do not match"),
        "{err}"
    );
}

#[test]
fn two_plugins_with_one_name_are_refused_naming_both() {
    let dir = plugin_dir(&["contraindication_safety"]);
    let original = plugin_library("contraindication_safety");
    let copy = dir.path().join("libcontraindication_safety_copy.so");
    std::fs::copy(original, &copy).unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("two reward plugins are named `contraindication_safety`"),
        "{err}"
    );
    assert!(
        err.contains("libcontraindication_safety.so") && err.contains("libcontraindication_safety_copy.so"),
        "{err}"
    );
}

#[test]
fn missing_or_unreadable_directory_is_named() {
    let missing = std::path::PathBuf::from("/nonexistent/crpo-plugins");
    let err = PluginRegistry::load(&[missing]).err().unwrap().to_string();
    assert!(
        err.contains("/nonexistent/crpo-plugins") && err.contains("No such file"),
        "{err}"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    let err = PluginRegistry::load(&[file.path().to_path_buf()])
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains(&file.path().display().to_string()) && err.contains("Not a directory"),
        "{err}"
    );
}

#[test]
fn plugin_built_against_an_older_minor_sdk_loads_and_works() {
    let dir = plugin_dir(&["legacy_plugin"]);
    let registry = PluginRegistry::load(&[dir.path().to_path_buf()]).unwrap();
    let registered = registry.reward("non_empty").unwrap();
    assert!(matches!(&registered.origin, Origin::Library { library, sdk, .. }
            if library == "legacy-plugin 1.0.0" && sdk == "1.0.0"));
    // `is_cheap` arrived in sdk 1.1: the 1.0 library's vtable lacks it and the default answers.
    assert!(crpo_sdk::SDK_VERSION.starts_with("1.") && crpo_sdk::SDK_VERSION != "1.0.0");
    assert!(registered.plugin().is_cheap());
    let objective = ConfiguredObjective::create(&registry, &spec("non_empty", None, json!(null))).unwrap();
    assert_eq!(score(&objective, &["an answer", "   "]).unwrap(), vec![1.0, 0.0]);
}

#[test]
fn cost_declared_by_a_current_plugin_crosses_the_boundary() {
    let dir = plugin_dir(&["misbehaving_rewards", "contraindication_safety"]);
    let registry = PluginRegistry::load(&[dir.path().to_path_buf()]).unwrap();
    assert!(!registry.reward("misbehaving").unwrap().plugin().is_cheap());
    assert!(registry
        .reward("contraindication_safety")
        .unwrap()
        .plugin()
        .is_cheap());
}

#[test]
fn init_model_of_a_policy_without_presets_says_so() {
    let dir = plugin_dir(&["bigram_policy"]);
    let out = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_crpo-host"))
        .arg("--plugins")
        .arg(dir.path())
        .args(["init-model", "--policy", "bigram", "--out"])
        .arg(out.path().join("m"))
        .env_remove("CRPO_PLUGIN_PATH")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    // It said "has no preset `tiny`: expected one of " and an empty list.
    assert!(stderr.contains("policy `bigram` writes no presets"), "{stderr}");
    assert!(!out.path().join("m").exists());
}

#[test]
fn loaded_policy_plugin_trains_through_tensor_handles() {
    use crpo_policy_sdk::{PolicyLoad, PolicyModel};
    use tch::{Device, Kind, Tensor};
    let dir = plugin_dir(&["bigram_policy"]);
    let registry = PluginRegistry::load(&[dir.path().to_path_buf()]).unwrap();
    let registered = registry.policy("bigram").unwrap();
    assert!(
        matches!(&registered.origin, Origin::Library { library, .. } if library == "bigram-policy 0.1.0")
    );
    assert!(
        registry.policy("qwen2").is_ok(),
        "the built-in decoder is a policy plugin too"
    );

    let model_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        model_dir.path().join("config.json"),
        r#"{"model_type": "bigram", "vocab_size": 6}"#,
    )
    .unwrap();
    let options = json!(null);
    let load = |dir: &std::path::Path| -> Box<dyn PolicyModel> {
        let request = PolicyLoad {
            dir,
            device: Device::Cpu,
            kind: Kind::Float,
            options: &options,
        };
        registered.plugin().load(&request).unwrap()
    };
    let model = load(model_dir.path());

    // Teach it "after 1 comes 2": the host computes the loss and steps the plugin's table.
    let ids = Tensor::from_slice(&[1i64, 2, 1, 2]).view([1, 4]);
    let mask = ids.ones_like();
    let targets = Tensor::from_slice(&[2i64, 1, 2, 1]).view([1, 4]);
    let loss_of = |model: &dyn PolicyModel| {
        let logits = model.forward(&ids, &mask).unwrap();
        logits
            .log_softmax(-1, Kind::Float)
            .gather(-1, &targets.unsqueeze(-1), false)
            .mean(Kind::Float)
            .neg()
    };
    let parameters = model.parameters();
    assert_eq!(parameters.len(), 1);
    let before = loss_of(model.as_ref()).double_value(&[]);
    assert!((before - 6f64.ln()).abs() < 1e-5, "starts uniform: {before}");
    for _ in 0..20 {
        let loss = loss_of(model.as_ref());
        loss.backward();
        tch::no_grad(|| {
            for (_, p) in &parameters {
                let mut grad = p.grad();
                let _ = p.shallow_clone().f_sub_(&(&grad * 1.0)).unwrap();
                let _ = grad.zero_();
            }
        });
    }
    let after = loss_of(model.as_ref()).double_value(&[]);
    assert!(
        after < before / 2.0,
        "the plugin's model learned through the boundary: {before} -> {after}"
    );

    // Saved by the plugin, loaded again: the same model.
    let saved = tempfile::tempdir().unwrap();
    model.save(saved.path()).unwrap();
    let reloaded = load(saved.path());
    assert!((loss_of(reloaded.as_ref()).double_value(&[]) - after).abs() < 1e-6);
    let bad = json!({"unknown": 1});
    let request = PolicyLoad {
        dir: model_dir.path(),
        device: Device::Cpu,
        kind: Kind::Float,
        options: &bad,
    };
    assert!(registered
        .plugin()
        .load(&request)
        .err()
        .unwrap()
        .to_string()
        .contains("unknown"));
}

/// A config's `[[run.plugin_pins]]` is checked before a library is opened: an unpinned or
/// changed library runs none of its code (its load-time constructor writes no file).
#[test]
fn pins_refuse_a_library_before_any_of_its_code_runs() {
    use crpo_host::plugins::trust::{sha256_of, Trust};
    use crpo_host::train::config::PluginPin;
    let dir = plugin_dir(&["not_a_crpo_plugin", "contraindication_safety"]);
    let marks = tempfile::tempdir().unwrap();
    let mark = marks.path().join("constructor-ran");
    // SAFETY: set once, before the library is opened; read only by the fixture's constructor.
    unsafe { std::env::set_var("CRPO_TEST_CONSTRUCTOR_MARK", &mark) };
    let safety = dir.path().join("libcontraindication_safety.so");
    let trust = Trust {
        pins: vec![PluginPin {
            file: "libcontraindication_safety.so".into(),
            sha256: sha256_of(&safety).unwrap(),
        }],
        allow_insecure: false,
    };
    let err = PluginRegistry::load_trusted(&[dir.path().to_path_buf()], &trust)
        .err()
        .expect("the unpinned library is refused")
        .to_string();
    assert!(
        err.contains("libnot_a_crpo_plugin.so") && err.contains("not pinned"),
        "{err}"
    );
    assert!(!mark.exists(), "the refused library's constructor ran");

    // Pinned and intact: loads. Changed after pinning: refused with both hashes.
    let only_safety = plugin_dir(&["contraindication_safety"]);
    let registry = PluginRegistry::load_trusted(&[only_safety.path().to_path_buf()], &trust).unwrap();
    assert!(registry.reward("contraindication_safety").is_ok());
    let changed = only_safety.path().join("libcontraindication_safety.so");
    let mut bytes = std::fs::read(&changed).unwrap();
    bytes.extend_from_slice(b"appended");
    // A new file in its place: the loaded one stays mapped, unchanged, until the process ends.
    std::fs::remove_file(&changed).unwrap();
    std::fs::write(&changed, bytes).unwrap();
    let err = PluginRegistry::load_trusted(&[only_safety.path().to_path_buf()], &trust)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("the file changed since it was pinned"), "{err}");

    // Without pins the library is opened (and refused as not a crpo plugin): the constructor
    // runs, which is why pins exist.
    let _ = PluginRegistry::load(&[dir.path().to_path_buf()]);
    assert!(
        mark.exists(),
        "the fixture's constructor works, so the check above can fail"
    );
}

#[test]
fn the_same_directory_named_twice_is_loaded_once() {
    let dir = plugin_dir(&["contraindication_safety"]);
    let dotted = dir.path().join(".");
    let registry = PluginRegistry::load(&[dir.path().to_path_buf(), dotted]).unwrap();
    assert_eq!(
        registry
            .rewards()
            .iter()
            .filter(|r| r.info.name == "contraindication_safety")
            .count(),
        1
    );
}

#[test]
fn a_missing_plugin_directory_says_so_once() {
    // As the CLI prints it: the error with its chain of causes.
    let err = PluginRegistry::load(&[std::path::PathBuf::from("/nonexistent/crpo-plugins")])
        .err()
        .unwrap();
    let err = format!("{:#}", anyhow::Error::from(err));
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
}

fn isolated(plugin: &str, options: serde_json::Value, timeout_s: f64, retries: usize) -> ObjectiveSpec {
    use crpo_host::plugins::isolation::{Execution, Isolation};
    ObjectiveSpec {
        execution: Execution {
            isolation: Isolation::Process,
            timeout: Some(std::time::Duration::from_secs_f64(timeout_s)),
            retries,
        },
        ..spec(plugin, None, options)
    }
}

#[test]
fn an_isolated_objective_scores_as_the_in_process_one() {
    let dir = plugin_dir(&["contraindication_safety"]);
    let registry = PluginRegistry::load(&[dir.path().to_path_buf()]).unwrap();
    let completions = [
        "<think>Warfarin and NSAIDs: bleeding.</think><answer>\\boxed{B}</answer>",
        "Ibuprofen is fine.",
    ];
    let in_process =
        ConfiguredObjective::create(&registry, &spec("contraindication_safety", None, json!(null))).unwrap();
    let in_worker = ConfiguredObjective::create(
        &registry,
        &isolated("contraindication_safety", json!(null), 60.0, 0),
    )
    .unwrap();
    assert_eq!(score(&in_process, &completions), score(&in_worker, &completions));
}

#[test]
fn a_worker_that_aborts_or_hangs_fails_the_call_naming_the_objective_not_the_trainer() {
    let dir = plugin_dir(&["misbehaving_rewards"]);
    let registry = PluginRegistry::load(&[dir.path().to_path_buf()]).unwrap();
    let aborting = ConfiguredObjective::create(
        &registry,
        &isolated("misbehaving", json!({"fault": "abort"}), 60.0, 1),
    )
    .unwrap();
    let err = score(&aborting, &["a", "b"]).unwrap_err();
    assert!(
        err.contains("objective `misbehaving`")
            && err.contains("2 attempt(s) failed")
            && err.contains("signal 6"),
        "{err}"
    );
    let hanging = ConfiguredObjective::create(
        &registry,
        &isolated("misbehaving", json!({"fault": "hang"}), 1.0, 0),
    )
    .unwrap();
    let err = score(&hanging, &["a"]).unwrap_err();
    assert!(
        err.contains("no answer within 1 s") && err.contains("worker was killed"),
        "{err}"
    );
    // A plugin's own error is the plugin's answer, not a crash: not retried.
    let too_few = ConfiguredObjective::create(
        &registry,
        &isolated("misbehaving", json!({"fault": "too_few"}), 60.0, 3),
    )
    .unwrap();
    assert!(score(&too_few, &["a", "b"])
        .unwrap_err()
        .contains("returned 1 scores for 2 completions"));
    // JSON has no inf: it crossed the pipe as null and was reported as NaN.
    let infinite = ConfiguredObjective::create(
        &registry,
        &isolated("misbehaving", json!({"fault": "inf"}), 60.0, 0),
    )
    .unwrap();
    let err = score(&infinite, &["a"]).unwrap_err();
    assert!(err.contains("non-finite score inf"), "{err}");
}

#[test]
fn a_crashed_worker_is_replaced_and_the_call_retried() {
    let dir = plugin_dir(&["misbehaving_rewards"]);
    let registry = PluginRegistry::load(&[dir.path().to_path_buf()]).unwrap();
    let marks = tempfile::tempdir().unwrap();
    let options = json!({"fault": "abort_once", "marker": marks.path().join("crashed")});
    let objective =
        ConfiguredObjective::create(&registry, &isolated("misbehaving", options, 60.0, 1)).unwrap();
    assert_eq!(score(&objective, &["a", "b"]).unwrap(), vec![1.0, 1.0]);
    assert!(
        marks.path().join("crashed").exists(),
        "the first worker did crash"
    );
}

#[test]
fn a_slow_in_process_objective_has_a_per_call_timeout() {
    use crpo_host::plugins::isolation::Execution;
    let dir = plugin_dir(&["misbehaving_rewards"]);
    let registry = PluginRegistry::load(&[dir.path().to_path_buf()]).unwrap();
    let hanging = ObjectiveSpec {
        execution: Execution {
            timeout: Some(std::time::Duration::from_secs(1)),
            ..Execution::default()
        },
        ..spec("misbehaving", None, json!({"fault": "hang"}))
    };
    let objective = ConfiguredObjective::create(&registry, &hanging).unwrap();
    let err = score(&objective, &["a"]).unwrap_err();
    assert!(
        err.contains("no answer within 1 s (timeout_s); the call is abandoned"),
        "{err}"
    );
}

#[test]
fn fifty_reward_plugins_from_fifty_libraries_load_and_score_together() {
    use crpo_host::train::config::AlgorithmConfig;
    use crpo_host::train::reward::RunReward;
    let source = plugin_library("numbered_reward");
    let dir = tempfile::tempdir().unwrap();
    for n in 1..=50 {
        std::fs::copy(&source, dir.path().join(format!("libnumbered_reward_{n:02}.so"))).unwrap();
    }
    let registry = PluginRegistry::load(&[dir.path().to_path_buf()]).unwrap();
    let specs: Vec<ObjectiveSpec> = (1..=50)
        .map(|n| spec(&format!("numbered_{n:02}"), None, json!(null)))
        .collect();
    let reward = RunReward::from_specs(&registry, &specs, &AlgorithmConfig::default()).unwrap();
    let scores = reward
        .score_group(
            &vignette_example(),
            "",
            &["a", "b", "c"],
            &[vec![1], vec![2], vec![3]],
        )
        .unwrap();
    let expected: Vec<f32> = (1..=50).map(|n| n as f32 / 100.0).collect();
    for row in &scores.values {
        assert_eq!(row, &expected, "each library is its own plugin");
    }
    assert!((scores.totals[0] - expected.iter().sum::<f32>()).abs() < 1e-4);
}
