//! A run's token budgets against its model's positions (`max_position_embeddings`), checked
//! from config.json before anything is loaded or written: `train`, `sft` and `doctor
//! --config` reach the same verdict, and a refused run leaves no directory behind.

use super::config::RunConfig;
use super::memory_plan::{planned_model, Phase};
use std::path::Path;

/// Refuses budgets beyond `positions` (none known: nothing to check): `prompt` + `completion`
/// tokens, each with the setting that sets it; `model` names the directory in the message.
pub fn check_budgets(
    positions: Option<usize>,
    model: &Path,
    (prompt_key, prompt): (&str, usize),
    (completion_key, completion): (&str, usize),
) -> anyhow::Result<()> {
    let Some(positions) = positions else {
        return Ok(());
    };
    // Wide: two budgets near usize::MAX must not wrap to a sum that fits.
    let total = prompt as u128 + completion as u128;
    if total > positions as u128 {
        anyhow::bail!(
            "{prompt_key} ({prompt}) + {completion_key} ({completion}) = {total} is beyond the {positions} positions of {} (max_position_embeddings in config.json, or transformers' default for its model_type where it has none): lower them",
            model.display()
        );
    }
    Ok(())
}

/// `max_position_embeddings` of the model directory `dir`, or where config.json lacks it the
/// default of transformers' class for its `model_type` (none without a config.json or for a
/// model type of another kind).
pub fn positions_of(dir: &Path) -> anyhow::Result<Option<usize>> {
    let path = dir.join("config.json");
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not valid JSON: {e}", path.display()))?;
    let model_type = json.get("model_type").and_then(serde_json::Value::as_str);
    match json.get("max_position_embeddings") {
        None | Some(serde_json::Value::Null) => {
            Ok(model_type.and_then(crpo_plugins_policy::config::default_positions))
        }
        // Written but no count: the loader refuses it too.
        Some(value) => value.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: max_position_embeddings = {value} is not a whole number",
                path.display()
            )
        }),
    }
}

/// The completion budgets `phase` runs with under `config`, each with its setting.
fn completion_budgets(config: &RunConfig, phase: Phase) -> Vec<(&'static str, usize)> {
    match phase {
        Phase::Sft => vec![("sft.max_completion_length", config.sft.max_completion_length)],
        Phase::Train => {
            let mut budgets = vec![(
                "algorithm.max_completion_length",
                config.algorithm.max_completion_length,
            )];
            if config.run.eval_steps > 0 {
                budgets.push(("eval.max_completion_length", config.eval.max_completion_length));
            }
            budgets
        }
    }
}

/// The budgets `phase` runs with under `config`, against the model it loads from model.path
/// (an adapter directory's base): before anything loads.
pub fn check_run(config: &RunConfig, phase: Phase) -> anyhow::Result<()> {
    let model = planned_model(config).0;
    let positions = positions_of(&model)?;
    let prompt = ("algorithm.max_prompt_length", config.max_prompt_length());
    for completion in completion_budgets(config, phase) {
        check_budgets(positions, &model, prompt, completion)?;
    }
    Ok(())
}

/// The same against the policy loaded: a resumed run's is its checkpoint's, which may be all
/// there is (model.path may have moved since).
pub fn check_loaded(policy: &crate::rollout::Policy, config: &RunConfig, phase: Phase) -> anyhow::Result<()> {
    let prompt = ("algorithm.max_prompt_length", config.max_prompt_length());
    for completion in completion_budgets(config, phase) {
        policy.check_positions(prompt, completion)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_beyond_the_positions_are_refused_naming_both_settings() {
        let model = Path::new("m");
        let fits = check_budgets(Some(2048), model, ("p", 512), ("c", 1536));
        assert!(fits.is_ok());
        let error = check_budgets(Some(2048), model, ("p", 512), ("c", 1537))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("p (512) + c (1537) = 2049 is beyond the 2048 positions of m"),
            "{error}"
        );
        assert!(check_budgets(Some(8), model, ("p", usize::MAX), ("c", usize::MAX)).is_err());
        assert!(check_budgets(None, model, ("p", usize::MAX), ("c", 1)).is_ok());
    }

    #[test]
    fn evaluation_during_training_is_checked_with_its_own_budget() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"max_position_embeddings": 600}"#,
        )
        .unwrap();
        let config = |extra: &str| {
            RunConfig::parse(&format!(
                "[model]\npath = \"{}\"\n[data]\npath = \"d\"\neval_path = \"e\"\n[reward]\npreset = \"crpo\"\n[algorithm]\nmax_prompt_length = 256\nmax_completion_length = 256\n{extra}",
                dir.path().display()
            ))
            .unwrap()
        };
        assert!(check_run(&config(""), Phase::Train).is_ok());
        let evaluating = config("[run]\neval_steps = 5\n[eval]\nmax_completion_length = 512\n");
        let error = check_run(&evaluating, Phase::Train).unwrap_err().to_string();
        assert!(error.contains("eval.max_completion_length (512)"), "{error}");
        let sft = config("[sft]\nmax_completion_length = 400\n");
        assert!(check_run(&sft, Phase::Sft)
            .unwrap_err()
            .to_string()
            .contains("sft.max_completion_length"));
    }

    #[test]
    fn a_config_without_max_position_embeddings_has_transformers_default() {
        let dir = tempfile::tempdir().unwrap();
        let write = |text: &str| std::fs::write(dir.path().join("config.json"), text).unwrap();
        write(r#"{"model_type": "llama"}"#);
        assert_eq!(positions_of(dir.path()).unwrap(), Some(2048));
        write(r#"{"model_type": "qwen2"}"#);
        assert_eq!(positions_of(dir.path()).unwrap(), Some(32768));
        write(r#"{"model_type": "llama", "max_position_embeddings": 4096}"#);
        assert_eq!(positions_of(dir.path()).unwrap(), Some(4096));
        write(r#"{"model_type": "gpt2"}"#);
        assert_eq!(positions_of(dir.path()).unwrap(), None);
        write(r#"{"model_type": "llama", "max_position_embeddings": "4096"}"#);
        let error = positions_of(dir.path()).unwrap_err().to_string();
        assert!(
            error.ends_with(r#"max_position_embeddings = "4096" is not a whole number"#),
            "{error}"
        );
    }
}
