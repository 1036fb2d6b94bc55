//! GRPOConfig's fields that crpo has under another name or not at all (docs/config.md's
//! table, field by field): a TRL user's config that names one is told what to write instead
//! of getting the list of every key the section takes.

/// Where TRL's `key` went, for an unknown key of that name.
pub fn hint(key: &str) -> Option<&'static str> {
    const ENGINE: &str =
        "not applicable: crpo samples with its own rollout engine (temperature, top_k and top_p)";
    Some(match key {
        "generation_batch_size" | "steps_per_generation" => {
            "TRL's: here a step samples algorithm.prompts_per_step × algorithm.num_generations completions and makes one optimizer update per per_device_train_batch_size × gradient_accumulation_steps of them"
        }
        "reward_weights" => "TRL's: here each [[reward.objectives]] entry has its own `weight`",
        "min_p" | "repetition_penalty" | "generation_kwargs" => ENGINE,
        "use_vllm" | "vllm_mode" | "vllm_server_host" | "vllm_server_port" | "vllm_gpu_memory_utilization"
        | "vllm_tensor_parallel_size" | "use_transformers_paged" | "cache_implementation"
        | "ds3_gather_for_generation" => ENGINE,
        "warmup_ratio" => "TRL's: write algorithm.warmup_steps (a number of optimizer updates)",
        "bf16" | "fp16" | "torch_dtype" => "TRL's: write model.dtype (\"auto\", \"f32\" or \"bf16\")",
        "report_to" => "not applicable: crpo always writes metrics.jsonl and TensorBoard files (`crpo-host report` draws them)",
        "eval_strategy" | "evaluation_strategy" => "TRL's: write run.eval_steps (every N steps; 0 never)",
        "save_strategy" => "TRL's: write run.save_steps (every N steps)",
        "logging_strategy" => "TRL's: write run.logging_steps",
        "per_device_eval_batch_size" => "TRL's: write eval.batch_size (questions per evaluation batch)",
        "shuffle_dataset" => "TRL's: write data.shuffle",
        "model_init_kwargs" | "trust_remote_code" | "disable_dropout" | "cast_lm_head_to_fp32" => {
            "not applicable: the policy plugin loads the model (model.options); the built-in one has no dropout"
        }
        "sync_ref_model" | "ref_model_mixup_alpha" | "ref_model_sync_steps" => {
            "not applicable: the reference model is the initial model"
        }
        "delta" | "importance_sampling_level" | "top_entropy_quantile" | "off_policy_mask_threshold"
        | "use_liger_loss" | "use_liger_kernel" => "not applicable: a loss variant crpo does not implement",
        "gradient_checkpointing_kwargs" => "not applicable: algorithm.gradient_checkpointing checkpoints each decoder layer",
        "chat_template_kwargs" => "not applicable: write data.prompt_template and data.system_prompt",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renamed_and_inapplicable_fields_say_where_they_went() {
        assert!(hint("reward_weights").unwrap().contains("`weight`"));
        assert!(hint("steps_per_generation").unwrap().contains("prompts_per_step"));
        assert!(hint("min_p").unwrap().starts_with("not applicable"));
        assert_eq!(hint("num_generations"), None, "a key crpo has under TRL's name");
    }
}
