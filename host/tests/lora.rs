//! LoRA adapters (`model.lora`, docs/memory.md): only the adapters train; the reference pass
//! is the base model (adapters off) with no second copy; runs save and resume PEFT adapter
//! directories; `merge-lora` folds one into its base; and PEFT reads ours and we read PEFT's
//! with the same logits (needs peft in the set-up venv: `CRPO_WITH_PEFT=1`, as `.ci/run`).

mod support;

use crpo_host::plugins::PluginRegistry;
use crpo_host::rollout::Policy;
use crpo_host::train::config::ModelSection;
use crpo_policy_sdk::lora::{LoraConfig, TargetModules};
use std::path::Path;
use std::process::Command;
use tch::{Kind, Tensor};

fn lora_config() -> LoraConfig {
    LoraConfig {
        target_modules: TargetModules::Names(vec!["q_proj".into(), "v_proj".into(), "down_proj".into()]),
        ..LoraConfig::new(4, 8.0)
    }
}

fn section(dir: &Path, lora: Option<LoraConfig>) -> ModelSection {
    toml::from_str::<ModelSection>(&format!("path = \"{}\"\ndevice = \"cpu\"", dir.display()))
        .map(|section| ModelSection { lora, ..section })
        .unwrap()
}

fn load(dir: &Path, lora: Option<LoraConfig>) -> Policy {
    Policy::load(&PluginRegistry::builtin_only(), &section(dir, lora), dir).unwrap()
}

/// `plugin` from `registry` on `dir`, with `lora`.
fn load_with(registry: &PluginRegistry, plugin: &str, dir: &Path, lora: Option<LoraConfig>) -> Policy {
    let section = ModelSection {
        policy: plugin.to_string(),
        ..section(dir, lora)
    };
    Policy::load(registry, &section, dir).unwrap()
}

/// Makes every adapter change the model (B starts at zero).
fn randomize_b(policy: &Policy) {
    tch::manual_seed(7);
    let _guard = tch::no_grad_guard();
    for (name, parameter) in policy.parameters() {
        if name.contains("lora_B") {
            parameter
                .shallow_clone()
                .copy_(&(Tensor::randn_like(&parameter) * 0.5));
        }
    }
}

fn prompts() -> (Vec<Vec<i64>>, Vec<Vec<i64>>) {
    (
        vec![vec![5, 6, 7], vec![5, 6, 7], vec![9]],
        vec![vec![11, 12], vec![13], vec![14, 15, 16]],
    )
}

fn max_difference(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn adapters_alone_train_and_the_reference_is_the_unadapted_base_built_in_and_loaded() {
    let libraries = support::plugin_dir(&["qwen2_library"]);
    let registry = PluginRegistry::load(&[libraries.path().to_path_buf()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    crpo_plugins_policy::presets::write_tiny(dir.path(), 1).unwrap();
    for plugin in ["qwen2", "qwen2-library"] {
        adapters_alone_train(&registry, plugin, dir.path());
    }
}

fn adapters_alone_train(registry: &PluginRegistry, plugin: &str, dir: &Path) {
    let base = load_with(registry, plugin, dir, None);
    let adapted = load_with(registry, plugin, dir, Some(lora_config()));
    assert!(adapted.adapters && !base.adapters);
    let names: Vec<String> = adapted.parameters().into_iter().map(|(n, _)| n).collect();
    // 2 layers × 3 projections × (A, B), by PEFT's names.
    assert_eq!(names.len(), 12, "{names:?}");
    assert!(names
        .iter()
        .all(|n| n.starts_with("base_model.model.model.layers.") && n.contains(".lora_")));
    assert!(names.contains(&"base_model.model.model.layers.1.mlp.down_proj.lora_B.weight".to_string()));

    let (prompts, completions) = prompts();
    let plain = base.logprobs(&prompts, &completions, false).unwrap().logprobs;
    // A fresh adapter (B = 0) changes nothing.
    let fresh = adapted.logprobs(&prompts, &completions, false).unwrap().logprobs;
    assert!(max_difference(&plain, &fresh) < 1e-6);
    randomize_b(&adapted);
    let on = adapted.logprobs(&prompts, &completions, false).unwrap().logprobs;
    assert!(
        max_difference(&plain, &on) > 1e-3,
        "the adapters change the model"
    );
    let reference = adapted
        .base_logprobs(&prompts, &completions, 1.0)
        .unwrap()
        .logprobs;
    assert!(
        max_difference(&plain, &reference) < 1e-6,
        "adapters off is the base"
    );
    let again = adapted.logprobs(&prompts, &completions, false).unwrap().logprobs;
    assert!(max_difference(&on, &again) < 1e-7, "and they are on again after");

    // Gradients reach the adapters only; the base weights are frozen.
    on.sum(Kind::Float).backward();
    for (name, parameter) in adapted.parameters() {
        if name.contains("lora_A") {
            assert!(
                parameter.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "{plugin}: {name}"
            );
        }
    }
    // A model without adapters has no base pass to offer.
    let error = format!(
        "{:#}",
        base.base_logprobs(&prompts, &completions, 1.0).unwrap_err()
    );
    assert!(error.contains("LoRA adapters"), "{error}");
}

#[test]
fn bad_lora_settings_are_refused_naming_the_key() {
    let parse = |lora: &str, algorithm: &str| {
        crpo_host::train::config::RunConfig::parse(&format!(
            "[model]\npath = \"m\"\n[model.lora]\n{lora}\n[data]\npath = \"d.jsonl\"\n[[reward.objectives]]\nplugin = \"consistency\"\n[algorithm]\n{algorithm}\n"
        ))
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    let error = parse("r = 0\nlora_alpha = 8", "");
    assert!(error.contains("model.lora.r: must be from 1 to 65536"), "{error}");
    let error = parse("layers_to_transform = [0]", "");
    assert!(
        error.contains("model.lora.layers_to_transform") && error.contains("all-linear"),
        "{error}"
    );
    // Values of the wrong form say what the key takes (serde said "data did not match any
    // variant of untagged enum LayerIndices").
    for (lora, says) in [
        ("layers_to_transform = [-1]", "a decoder layer's index"),
        ("target_modules = 3", "a list of module names"),
        ("layers_pattern = 1", "the name of the module list"),
    ] {
        let error = parse(lora, "");
        assert!(error.contains(says) && !error.contains("untagged"), "{error}");
    }
    let error = parse("r = 4\nlora_alpha = 8\ntarget_modules = \"everything\"", "");
    assert!(error.contains("model.lora.target_modules"), "{error}");
    // PEFT adapts these; crpo does not, and said "selects none of the linear layers" or warned.
    for head in ["lm_head", "embed_tokens"] {
        let error = parse(
            &format!("r = 4\nlora_alpha = 8\ntarget_modules = [\"q_proj\", \"{head}\"]"),
            "",
        );
        assert!(
            error.contains("model.lora.target_modules") && error.contains(head),
            "{error}"
        );
    }
    // Dropout with checkpointing is the command's to refuse (train's and sft's keys differ):
    // one config may checkpoint sft and not train.
    assert!(crpo_host::train::config::RunConfig::parse(
        "[model]\npath = \"m\"\n[model.lora]\nr = 4\nlora_alpha = 8\nlora_dropout = 0.1\n[data]\npath = \"d.jsonl\"\n[[reward.objectives]]\nplugin = \"consistency\"\n[sft]\ngradient_checkpointing = true\n"
    )
    .is_ok());
}

#[test]
fn the_cold_start_trains_an_adapter() {
    let dir = tempfile::tempdir().unwrap();
    crpo_plugins_policy::presets::write_tiny(&dir.path().join("model"), 0).unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/demo/train.jsonl");
    let examples: String = std::fs::read_to_string(data)
        .unwrap()
        .lines()
        .take(8)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.path().join("sft.jsonl"), examples).unwrap();
    let config = "[run]\noutput_dir = \"run\"\n[model]\npath = \"model\"\ndevice = \"cpu\"\n[model.lora]\nr = 4\nlora_alpha = 8\n[data]\npath = \"sft.jsonl\"\neval_fraction = 0.0\n[[reward.objectives]]\nplugin = \"consistency\"\n[sft]\nper_device_train_batch_size = 4\nmax_completion_length = 16\n";
    std::fs::write(dir.path().join("run.toml"), config).unwrap();
    let output = crpo(dir.path(), &["sft", "--config", "run.toml"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // The demo's references are longer than 16 tokens: each is cut (without EOS), and counted.
    assert!(
        stderr.contains("8 of 8 examples had a reference completion over sft.max_completion_length"),
        "{stderr}"
    );
    let adapter = dir.path().join("run/sft/model");
    assert!(adapter.join("adapter_config.json").exists() && !adapter.join("model.safetensors").exists());
    // Started from over its own base, in silence; over another model of the same shape (the
    // shapes cannot tell), with a warning naming both.
    crpo_plugins_policy::presets::write_tiny(&dir.path().join("other"), 1).unwrap();
    for (base, warned) in [("model", false), ("other", true)] {
        let config = config
            .replace("output_dir = \"run\"", &format!("output_dir = \"{base}-run\""))
            .replace("path = \"model\"", &format!("path = \"{base}\""))
            .replace(
                "lora_alpha = 8\n",
                "lora_alpha = 8\nadapter = \"run/sft/model\"\n",
            );
        std::fs::write(dir.path().join("again.toml"), config).unwrap();
        let output = crpo(dir.path(), &["sft", "--config", "again.toml"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert_eq!(
            stderr.contains("was trained on") && stderr.contains("not on model.path"),
            warned,
            "{base}: {stderr}"
        );
    }
    // The adapter directory is a model directory: generate from it.
    let output = crpo(
        dir.path(),
        &[
            "generate",
            "--model",
            adapter.to_str().unwrap(),
            "--prompt",
            "Gout is",
            "--max-new-tokens",
            "4",
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn crpo(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_crpo-host"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn a_lora_run_checkpoints_peft_adapters_resumes_and_merges() {
    let dir = tempfile::tempdir().unwrap();
    crpo_plugins_policy::presets::write_tiny(&dir.path().join("model"), 0).unwrap();
    let base_weights = std::fs::read(dir.path().join("model/model.safetensors")).unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/demo/train.jsonl");
    let config = format!(
        "[run]\noutput_dir = \"run\"\nmax_steps = 2\nsave_steps = 1\nsample_steps = 0\n[model]\npath = \"model\"\ndevice = \"cpu\"\n[model.lora]\nr = 4\nlora_alpha = 8\ntarget_modules = \"all-linear\"\n[data]\npath = \"{}\"\neval_fraction = 0.0\n[[reward.objectives]]\nplugin = \"consistency\"\n[algorithm]\nnum_generations = 2\nprompts_per_step = 2\nper_device_train_batch_size = 4\nmax_completion_length = 8\nbeta = 0.04\nlearning_rate = 1e-2\n",
        data.display()
    );
    std::fs::write(dir.path().join("run.toml"), &config).unwrap();
    let output = crpo(dir.path(), &["train", "--config", "run.toml"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let checkpoint = dir.path().join("run/checkpoints/step-000002/model");
    assert!(checkpoint.join("adapter_config.json").exists());
    assert!(checkpoint.join("adapter_model.safetensors").exists());
    assert!(
        !checkpoint.join("model.safetensors").exists(),
        "the base is not copied"
    );
    assert_eq!(
        std::fs::read(dir.path().join("model/model.safetensors")).unwrap(),
        base_weights,
        "the base weights never change"
    );
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert!(
        last["kl"].as_f64().unwrap() > 0.0,
        "the KL to the base is measured: {last}"
    );

    // Resume one more step from the adapter checkpoint.
    std::fs::write(
        dir.path().join("run.toml"),
        config.replace("max_steps = 2", "max_steps = 3"),
    )
    .unwrap();
    let output = crpo(dir.path(), &["train", "--config", "run.toml", "--resume"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let adapter = dir.path().join("run/checkpoints/step-000003/model");
    assert!(adapter.join("adapter_model.safetensors").exists());

    // The adapter directory is a model directory to crpo; merged, it is a plain one with the
    // same logits.
    let output = crpo(
        dir.path(),
        &[
            "merge-lora",
            "--adapter",
            adapter.to_str().unwrap(),
            "--out",
            "merged",
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let registry = PluginRegistry::builtin_only();
    let plain_section = section(&dir.path().join("model"), None);
    let adapted = Policy::load(&registry, &plain_section, &adapter).unwrap();
    let merged = Policy::load(&registry, &plain_section, &dir.path().join("merged")).unwrap();
    assert!(adapted.adapters && !merged.adapters);
    let (prompts, completions) = prompts();
    let a = adapted.logprobs(&prompts, &completions, false).unwrap().logprobs;
    let m = merged.logprobs(&prompts, &completions, false).unwrap().logprobs;
    assert!(
        max_difference(&a, &m) < 1e-5,
        "merged differs by {}",
        max_difference(&a, &m)
    );
    let base = Policy::load(&registry, &plain_section, &dir.path().join("model")).unwrap();
    let b = base.logprobs(&prompts, &completions, false).unwrap().logprobs;
    assert!(max_difference(&a, &b) > 1e-4, "training moved the adapters");
    // merge-lora refuses to overwrite.
    let output = crpo(
        dir.path(),
        &[
            "merge-lora",
            "--adapter",
            adapter.to_str().unwrap(),
            "--out",
            "merged",
        ],
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not empty"));
    // Into another model of the same shape (the merged one): done as asked, with a warning
    // that the adapter was trained on another base.
    let output = crpo(
        dir.path(),
        &[
            "merge-lora",
            "--adapter",
            adapter.to_str().unwrap(),
            "--base",
            "merged",
            "--out",
            "merged-twice",
        ],
    );
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && err.contains("was trained on") && err.contains("not on --base merged"),
        "{err}"
    );
}

/// `crpo-host merge-lora` of `adapter` into `merged`, which must succeed.
fn merge_lora(dir: &Path, adapter: &Path, merged: &Path) {
    let (adapter, merged) = (adapter.to_str().unwrap(), merged.to_str().unwrap());
    let output = crpo(dir, &["merge-lora", "--adapter", adapter, "--out", merged]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn ids_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("ids.json");
    std::fs::write(&path, "[[5, 6, 7, 8], [9, 10], [3, 17, 4, 21, 30]]").unwrap();
    path
}

/// Our logits for `ids.json`'s rows (last position) against PEFT's `expected.json`.
fn assert_logits_match(policy: &Policy, dir: &Path, expected: &Path) {
    let expected: Vec<Vec<f64>> = serde_json::from_str(&std::fs::read_to_string(expected).unwrap()).unwrap();
    let rows: Vec<Vec<i64>> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("ids.json")).unwrap()).unwrap();
    for (ids, expected) in rows.iter().zip(expected) {
        let input = Tensor::from_slice(ids).view([1, -1]);
        let logits = tch::no_grad(|| policy.model.forward(&input, &input.ones_like()).unwrap());
        let ours = logits.get(0).get(ids.len() as i64 - 1).to_kind(Kind::Double);
        let theirs = Tensor::from_slice(&expected);
        let difference = max_difference(&ours, &theirs);
        assert!(difference < 1e-4, "logits differ by {difference}");
    }
}

#[test]
fn peft_loads_our_adapter_and_we_load_peft_s_with_the_same_logits() {
    let python = match support::venv_python_with("peft", "CRPO_WITH_PEFT") {
        Ok(python) => python,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peft_reference.py");
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    crpo_plugins_policy::presets::write_tiny(&base, 5).unwrap();
    let ids = ids_file(dir.path());

    // Ours → PEFT.
    let ours = load(&base, Some(lora_config()));
    randomize_b(&ours);
    let adapter = dir.path().join("ours");
    ours.save(&adapter).unwrap();
    let expected = dir.path().join("peft-logits.json");
    let status = Command::new(&python)
        .args([
            script.as_os_str(),
            "load".as_ref(),
            base.as_os_str(),
            adapter.as_os_str(),
            ids.as_os_str(),
            expected.as_os_str(),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "peft could not load our adapter");
    assert_logits_match(&ours, dir.path(), &expected);

    // Ours merged → transformers alone: the same logits.
    let merged = dir.path().join("merged");
    merge_lora(dir.path(), &adapter, &merged);
    let expected = dir.path().join("merged-logits.json");
    let status = Command::new(&python)
        .args([
            script.as_os_str(),
            "plain".as_ref(),
            merged.as_os_str(),
            "-".as_ref(),
            ids.as_os_str(),
            expected.as_os_str(),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "transformers could not load the merged model");
    assert_logits_match(&ours, dir.path(), &expected);

    // PEFT → ours (its adapter directory is a model directory to crpo).
    let theirs = dir.path().join("theirs");
    let expected = dir.path().join("peft-made-logits.json");
    assert!(
        peft_make(&python, &base, &theirs, &expected, "{}"),
        "peft could not make an adapter"
    );
    let loaded = Policy::load(&PluginRegistry::builtin_only(), &section(&base, None), &theirs).unwrap();
    assert!(loaded.adapters);
    assert_logits_match(&loaded, dir.path(), &expected);
}

/// PEFT makes an adapter over `base` with `settings` (LoraConfig's arguments, JSON) into
/// `adapter`, and writes its logits for ids.json to `expected`.
fn peft_make(python: &Path, base: &Path, adapter: &Path, expected: &Path, settings: &str) -> bool {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peft_reference.py");
    let ids = base.parent().unwrap().join("ids.json");
    Command::new(python)
        .args([
            script.as_os_str(),
            "make".as_ref(),
            base.as_os_str(),
            adapter.as_os_str(),
        ])
        .args([ids.as_os_str(), expected.as_os_str(), settings.as_ref()])
        .status()
        .unwrap()
        .success()
}

#[test]
fn peft_s_narrower_selections_and_per_layer_ranks_load_and_merge_as_peft_applies_them() {
    let python = match support::venv_python_with("peft", "CRPO_WITH_PEFT") {
        Ok(python) => python,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    crpo_plugins_policy::presets::write_tiny(&base, 7).unwrap();
    ids_file(dir.path());
    let variants = [
        // A regular expression over full names, and ranks and alphas by pattern.
        r#"{"target_modules": ".*\\.(q_proj|up_proj)", "rank_pattern": {"up_proj": 2}, "alpha_pattern": {"q_proj": 3}}"#,
        // Names by dotted suffix, one decoder layer, one module excluded, rsLoRA.
        r#"{"target_modules": ["self_attn.v_proj", "o_proj", "down_proj"], "layers_to_transform": [1], "exclude_modules": ["model.layers.1.self_attn.o_proj"], "use_rslora": true}"#,
    ];
    for (i, settings) in variants.iter().enumerate() {
        let adapter = dir.path().join(format!("adapter-{i}"));
        let expected = dir.path().join(format!("expected-{i}.json"));
        assert!(
            peft_make(&python, &base, &adapter, &expected, settings),
            "{settings}"
        );
        let loaded = Policy::load(&PluginRegistry::builtin_only(), &section(&base, None), &adapter).unwrap();
        assert_logits_match(&loaded, dir.path(), &expected);
        // Merged by crpo, loaded without peft: the same model.
        let merged = dir.path().join(format!("merged-{i}"));
        merge_lora(dir.path(), &adapter, &merged);
        assert_logits_match(&load(&merged, None), dir.path(), &expected);
    }
    // DoRA is not plain LoRA: refused by name, not loaded without its magnitudes.
    let dora = dir.path().join("dora");
    assert!(peft_make(
        &python,
        &base,
        &dora,
        &dir.path().join("dora.json"),
        r#"{"use_dora": true}"#
    ));
    let error = Policy::load(&PluginRegistry::builtin_only(), &section(&base, None), &dora)
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(
        error.contains("use_dora") && error.contains("adapter_config.json"),
        "{error}"
    );
}

#[test]
fn an_adapter_to_start_from_keeps_the_scale_it_was_trained_with() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("model");
    crpo_plugins_policy::presets::write_tiny(&base, 3).unwrap();
    let trained = load(&base, Some(lora_config()));
    randomize_b(&trained);
    let adapter = dir.path().join("adapter");
    trained.model.save(&adapter).unwrap();
    // The run's model.lora says another scale (alpha 32, rsLoRA): the adapter's own holds.
    let other = LoraConfig {
        lora_alpha: 32.0,
        use_rslora: true,
        adapter: Some(adapter.clone()),
        ..lora_config()
    };
    let started = load(&base, Some(other));
    let (prompts, completions) = prompts();
    let expected = trained.logprobs(&prompts, &completions, false).unwrap().logprobs;
    let got = started.logprobs(&prompts, &completions, false).unwrap().logprobs;
    assert!(
        max_difference(&expected, &got) < 1e-6,
        "{}",
        max_difference(&expected, &got)
    );
    // A directory that is not an adapter is named with the key.
    let not_adapter = LoraConfig {
        adapter: Some(base.clone()),
        ..lora_config()
    };
    let error = Policy::load(
        &PluginRegistry::builtin_only(),
        &section(&base, Some(not_adapter)),
        &base,
    )
    .err()
    .unwrap();
    let message = format!("{error:#}");
    assert!(
        message.contains("model.lora.adapter") && message.contains("adapter_config.json"),
        "{message}"
    );
}

/// An adapter directory given as `model.path` brings its own dropout, which activation
/// checkpointing cannot recompute (another mask): refused, as `[model.lora]`'s is.
#[test]
fn an_adapter_s_own_dropout_is_refused_with_checkpointing() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("model");
    crpo_plugins_policy::presets::write_tiny(&base, 3).unwrap();
    let dropping = LoraConfig {
        lora_dropout: 0.1,
        ..lora_config()
    };
    // [model.lora]'s own dropout: refused by the key that asks for checkpointing.
    let fresh = load(&base, Some(dropping.clone()));
    let error = format!(
        "{:#}",
        fresh
            .set_gradient_checkpointing("algorithm.gradient_checkpointing", true)
            .unwrap_err()
    );
    assert!(
        error.contains("algorithm.gradient_checkpointing") && error.contains("lora_dropout = 0.1"),
        "{error}"
    );
    let adapter = dir.path().join("adapter");
    fresh.model.save(&adapter).unwrap();
    let policy = load(&adapter, None);
    let error = format!(
        "{:#}",
        policy
            .set_gradient_checkpointing("sft.gradient_checkpointing", true)
            .unwrap_err()
    );
    assert!(
        error.contains("sft.gradient_checkpointing") && error.contains("lora_dropout = 0.1"),
        "{error}"
    );
    assert!(policy
        .set_gradient_checkpointing("sft.gradient_checkpointing", false)
        .is_ok());
}

/// `file` rewritten with `change` applied to its tensors.
fn rewrite_tensors(file: &Path, change: impl FnOnce(&mut Vec<(String, Tensor)>)) {
    let mut tensors = Tensor::read_safetensors(file).unwrap();
    change(&mut tensors);
    Tensor::write_safetensors(&tensors, file).unwrap();
}

#[test]
fn non_finite_or_integer_weights_under_lora_are_refused_naming_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    crpo_plugins_policy::presets::write_tiny(&model, 0).unwrap();
    let policy = load(&model, Some(lora_config()));
    randomize_b(&policy);
    let adapter = dir.path().join("adapter");
    policy.save(&adapter).unwrap();
    let generate = |adapter: &Path| {
        let output = crpo(
            dir.path(),
            &[
                "generate",
                "--model",
                adapter.to_str().unwrap(),
                "--prompt",
                "hi",
                "--greedy",
            ],
        );
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    // NaN in an adapter is named in the adapter's file (it was blamed on the base model).
    let copy = |name: &str| {
        let to = dir.path().join(name);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(&adapter).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
        to
    };
    let nan_adapter = copy("nan-adapter");
    rewrite_tensors(&nan_adapter.join("adapter_model.safetensors"), |tensors| {
        let (_, b) = tensors.iter_mut().find(|(n, _)| n.contains("lora_B")).unwrap();
        *b = b.fill(f64::NAN);
    });
    let said = generate(&nan_adapter);
    assert!(
        said.contains("nan-adapter/adapter_model.safetensors") && said.contains("NaN or infinite"),
        "{said}"
    );
    // Integers would be truncated into the model: refused as merge-lora refuses them.
    let int_adapter = copy("int-adapter");
    rewrite_tensors(&int_adapter.join("adapter_model.safetensors"), |tensors| {
        let (_, a) = tensors.iter_mut().find(|(n, _)| n.contains("lora_A")).unwrap();
        *a = a.to_kind(Kind::Int);
    });
    let said = generate(&int_adapter);
    assert!(said.contains("not floating-point numbers"), "{said}");
    // NaN in the frozen base: refused at load, as without LoRA (sft failed at its first
    // gradient, "try a lower learning rate"), and merge-lora will not write it.
    let nan_base = dir.path().join("nan-model");
    crpo_plugins_policy::presets::write_tiny(&nan_base, 0).unwrap();
    rewrite_tensors(&nan_base.join("model.safetensors"), |tensors| {
        let (_, w) = tensors
            .iter_mut()
            .find(|(n, _)| n.ends_with("up_proj.weight"))
            .unwrap();
        let _ = w.get(0).get(0).fill_(f64::NAN);
    });
    let section = section(&nan_base, Some(lora_config()));
    let error = Policy::load(&PluginRegistry::builtin_only(), &section, &nan_base)
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap();
    assert!(
        error.contains("up_proj.weight` holds non-finite values"),
        "{error}"
    );
    let output = crpo(
        dir.path(),
        &[
            "merge-lora",
            "--adapter",
            "adapter",
            "--base",
            "nan-model",
            "--out",
            "merged",
        ],
    );
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && said.contains("up_proj.weight` holds non-finite values"),
        "{said}"
    );
    assert!(!dir.path().join("merged").exists());
}
