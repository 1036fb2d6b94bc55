//! Our decoder and engine against transformers' Qwen2 on the same random checkpoint: logits
//! and greedy output through the `qwen2` plugin and the host's rollout engine, chat templates,
//! and saved models loading in transformers. Needs Python transformers in the set-up venv
//! (`.ci/run` installs it); without it the test prints why and returns.

#[path = "support/mod.rs"]
mod support;

use crpo_host::plugins::PluginRegistry;
use crpo_host::rollout::fixed_shape_steps::FixedShapeSettings;
use crpo_host::rollout::generation::{generate, DecodeSteps, TokenSpace};
use crpo_host::rollout::sampling::SamplingConfig;
use crpo_host::rollout::tokenizer::{ChatTokenizer, Message};
use crpo_host::rollout::Policy;
use crpo_policy_sdk::PolicyLoad;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// The venv python with transformers, or `None` after printing why the test is skipped.
fn transformers_or_skip() -> Option<PathBuf> {
    support::venv_python_with("transformers", "CRPO_WITH_TRANSFORMERS")
        .map_err(|reason| println!("skipped: {reason}"))
        .ok()
}

/// A model transformers made (`kind`: tie, separate or llama3; tests/transformers_reference.py)
/// and its logits and greedy output, or `None` when transformers is missing.
fn reference(kind: &str) -> Option<(tempfile::TempDir, serde_json::Value)> {
    let python = transformers_or_skip()?;
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transformers_reference.py");
    support::python_output(
        &python,
        &[script.as_os_str(), dir.path().as_os_str(), kind.as_ref()],
    );
    let expected =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("expected.json")).unwrap()).unwrap();
    Some((dir, expected))
}

/// Our logits and greedy output for the model in `dir` against transformers' `expected`.
fn assert_matches_transformers(dir: &Path, expected: &serde_json::Value, label: &str) {
    // Through the registry's plugin, as a run loads it (the reference writes no tokenizer).
    let registry = PluginRegistry::builtin_only();
    let model = registry
        .policy("qwen2")
        .unwrap()
        .plugin()
        .load(&PolicyLoad {
            dir,
            device: Device::Cpu,
            kind: Kind::Float,
            options: &serde_json::Value::Null,
        })
        .unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();

    let prompt: Vec<i64> = serde_json::from_value(expected["prompt"].clone()).unwrap();
    let ids = Tensor::from_slice(&prompt).unsqueeze(0);
    let ours = tch::no_grad(|| model.forward(&ids, &ids.ones_like()))
        .unwrap()
        .get(0);
    let theirs: Vec<Vec<f32>> = serde_json::from_value(expected["logits"].clone()).unwrap();
    let theirs = Tensor::from_slice(&theirs.concat()).view([prompt.len() as i64, -1]);
    let diff = (&ours - &theirs).abs().max().double_value(&[]);
    let scale = theirs.abs().max().double_value(&[]);
    assert!(
        diff < 1e-4 * scale.max(1.0),
        "{label}: logits differ by {diff} (scale {scale})"
    );

    let greedy = SamplingConfig {
        max_new_tokens: 8,
        greedy: true,
        ..SamplingConfig::default()
    };
    let tokens = TokenSpace {
        eos_ids: &[],
        pad_id: 0,
        usable_vocab: config["vocab_size"].as_u64().unwrap() as usize,
    };
    let theirs: Vec<i64> = serde_json::from_value(expected["greedy"].clone()).unwrap();
    // Both ways of running decode steps: eager, and the fixed shapes a GPU replays as graphs.
    let fixed = DecodeSteps::Fixed(FixedShapeSettings {
        capture: false,
        window_step: 4,
    });
    for steps in [DecodeSteps::Eager, fixed] {
        let ours = generate(
            &*model,
            (Kind::Float, Device::Cpu),
            std::slice::from_ref(&prompt),
            &tokens,
            &greedy,
            steps,
        )
        .unwrap()
        .0
        .remove(0)
        .ids;
        assert_eq!(ours, theirs, "{label}: greedy output differs ({steps:?})");
    }
}

fn compare(tie: bool) {
    let kind = if tie { "tie" } else { "separate" };
    let Some((dir, expected)) = reference(kind) else {
        return;
    };
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config["tie_word_embeddings"].as_bool().unwrap_or(false), tie);
    assert_matches_transformers(dir.path(), &expected, kind);
}

#[test]
fn logits_and_greedy_output_match_transformers_with_separate_lm_head() {
    compare(false);
}

#[test]
fn logits_and_greedy_output_match_transformers_with_tied_embeddings() {
    compare(true);
}

#[test]
fn a_llama_with_llama3_rotary_scaling_matches_transformers_in_either_config_layout() {
    let Some((dir, expected)) = reference("llama3") else {
        return;
    };
    // transformers 5's layout: the scaling in rope_parameters.
    assert_matches_transformers(dir.path(), &expected, "rope_parameters");
    // transformers 4's, as Llama 3.1/3.2 checkpoints ship it: rope_theta at the top level and
    // the scaling in rope_scaling.
    let path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut scaling = config.as_object_mut().unwrap().remove("rope_parameters").unwrap();
    config["rope_theta"] = scaling.as_object_mut().unwrap().remove("rope_theta").unwrap();
    config["rope_scaling"] = scaling;
    std::fs::write(&path, config.to_string()).unwrap();
    assert_matches_transformers(dir.path(), &expected, "rope_scaling");
    // Without the scaling the same weights give other logits: the test can tell.
    config.as_object_mut().unwrap().remove("rope_scaling");
    std::fs::write(&path, config.to_string()).unwrap();
    let unscaled =
        std::panic::catch_unwind(|| assert_matches_transformers(dir.path(), &expected, "unscaled"));
    assert!(unscaled.is_err(), "rotary scaling made no difference");
}

#[test]
fn a_qwen2_sliding_window_over_every_position_is_full_attention_and_a_shorter_one_is_refused() {
    let Some((dir, expected)) = reference("window") else {
        return;
    };
    let path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(config["use_sliding_window"], true);
    assert_matches_transformers(dir.path(), &expected, "window over every position");
    config["sliding_window"] = 4.into();
    std::fs::write(&path, config.to_string()).unwrap();
    let error = PluginRegistry::builtin_only()
        .policy("qwen2")
        .unwrap()
        .plugin()
        .load(&PolicyLoad {
            dir: dir.path(),
            device: Device::Cpu,
            kind: Kind::Float,
            options: &serde_json::Value::Null,
        })
        .err()
        .expect("a 4-token window was taken")
        .to_string();
    assert!(
        error.contains("windows attention to 4 tokens on 2 of 2 layers"),
        "{error}"
    );
}

/// A Qwen2.5-style template: whitespace control, `loop.first`, indexing, filters, a default
/// system prompt and Python string methods.
const QWEN_STYLE_TEMPLATE: &str = "{%- if messages[0]['role'] == 'system' %}\n    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n{%- else %}\n    {{- '<|im_start|>system\\nYou are a careful clinician.<|im_end|>\\n' }}\n{%- endif %}\n{%- for message in messages %}\n    {%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or (message.role == 'assistant') %}\n        {{- '<|im_start|>' + message.role + '\\n' + message.content.strip() | trim + '<|im_end|>' + '\\n' }}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n";

/// Features real templates use that minijinja has otherwise: `{% generation %}` (assistant-only
/// loss templates), `tools is not none` (transformers passes None), `tojson` as Python's
/// json.dumps (no HTML escapes, keys in order, indent), a message's keys in order.
const FEATURES_TEMPLATE: &str = r#"{%- if tools is not none %}TOOLS{% endif -%}
{%- for message in messages %}
{{- '<|im_start|>' + message['role'] + '\n' }}
{%- if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}{% endgeneration %}{% else %}{{ message['content'] | tojson }}{% endif %}
{{- '<|im_end|>\n' }}
{%- endfor %}
{{- {'b': 1, 'a': '<é>'} | tojson }}{{ {'b': [1, 2]} | tojson(indent=2) }}
{%- for key, value in messages[0].items() %}{{ key }}={{ value | length }};{% endfor %}
{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"#;

#[test]
fn chat_templates_render_as_transformers_renders_them() {
    let Some(python) = transformers_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    crpo_plugins_policy::presets::write_tiny(dir.path(), 1).unwrap();
    let conversations = [
        vec![("user", "A 45-year-old man has chest pain. Which test first?")],
        vec![
            ("system", "Answer with a letter."),
            ("user", "  Which drug?  "),
            ("assistant", "B"),
            ("user", "Why?"),
        ],
        // A prefill the completion continues; the Qwen-style template trims it.
        vec![("user", "Which drug?"), ("assistant", "  <think>\nFirst, ")],
        vec![("user", "Is <b> & 'c' \"quoted\"?")],
    ];
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chat_template_reference.py");
    for template in [None, Some(QWEN_STYLE_TEMPLATE), Some(FEATURES_TEMPLATE)] {
        if let Some(template) = template {
            let path = dir.path().join("tokenizer_config.json");
            let mut config: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            config["chat_template"] = template.into();
            std::fs::write(&path, config.to_string()).unwrap();
        }
        let tokenizer = ChatTokenizer::from_dir(dir.path()).unwrap();
        for conversation in &conversations {
            let messages: Vec<Message> = conversation
                .iter()
                .map(|(role, content)| Message {
                    role: role.to_string(),
                    content: content.to_string(),
                })
                .collect();
            let json = serde_json::Value::Array(
                conversation
                    .iter()
                    .map(|(role, content)| serde_json::json!({"role": role, "content": content}))
                    .collect(),
            );
            let json = json.to_string();
            let stdout = support::python_output(
                &python,
                &[script.as_os_str(), dir.path().as_os_str(), json.as_ref()],
            );
            let expected: Vec<String> = String::from_utf8_lossy(&stdout)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(tokenizer.render_chat(&messages, true).unwrap(), expected[0]);
            assert_eq!(tokenizer.render_chat(&messages, false).unwrap(), expected[1]);
            assert_eq!(tokenizer.render_prompt(&messages).unwrap(), expected[2]);
        }
    }
}

/// Digits, an age and a temperature: Qwen2's own tokenizer splits digits apart, so a preset
/// tokenizer that transformers read as Qwen2's would encode this differently.
const PROMPT_WITH_DIGITS: &str = "A 24-year-old man, System 1: fever 38.5 C and cough suggest pneumonia.";

/// What `Policy::save` writes (and so every trainer checkpoint's `model/`) loads in
/// transformers, tokenizer included, and gives our logits.
#[test]
fn saved_policies_load_in_transformers() {
    let Some(python) = transformers_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    crpo_plugins_policy::presets::write_tiny(&dir.path().join("tiny"), 3).unwrap();
    let policy = Policy::load_with(
        &PluginRegistry::builtin_only(),
        "qwen2",
        &dir.path().join("tiny"),
        Device::Cpu,
        Kind::Float,
        &serde_json::Value::Null,
    )
    .unwrap();
    let saved = dir.path().join("saved");
    policy.save(&saved).unwrap();
    let ids = policy.tokenizer.encode(PROMPT_WITH_DIGITS).unwrap();
    let ours = tch::no_grad(|| {
        let ids = Tensor::from_slice(&ids).unsqueeze(0);
        policy
            .model
            .forward(&ids, &ids.ones_like())
            .unwrap()
            .get(0)
            .select(0, -1)
    });
    let script = r#"
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
ids = tokenizer(sys.argv[2])["input_ids"]
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0, -1]
print(json.dumps({"ids": ids, "logits": logits.tolist()}))
"#;
    let stdout = support::python_output(
        &python,
        &[
            "-c".as_ref(),
            script.as_ref(),
            saved.as_os_str(),
            PROMPT_WITH_DIGITS.as_ref(),
        ],
    );
    let theirs: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    let their_ids: Vec<i64> = serde_json::from_value(theirs["ids"].clone()).unwrap();
    assert_eq!(their_ids, ids, "the saved tokenizer encodes the same ids");
    let their_logits: Vec<f32> = serde_json::from_value(theirs["logits"].clone()).unwrap();
    let diff = (&ours - Tensor::from_slice(&their_logits))
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff < 1e-4, "logits differ by {diff}");
}
