//! Log-prob passes grouped by length and cut by a token budget give the update that one
//! padded pass per nominal micro-batch gives: the loss is defined over the nominal
//! micro-batches, and the passes only decide what runs through the model together. Every
//! pass scores the distribution sampled at the run's temperature.

mod support;

use crpo_host::train::config::{AlgorithmConfig, LossType};
use crpo_host::train::micro_batches::{plan, Rows};
use crpo_host::train::optimizer::{AdamW, AdamWSettings};
use crpo_host::train::update::{update_policy, Batch, Reference};
use std::path::Path;
use support::load_qwen2 as load;
use tch::Tensor;

/// Three prompts, two completions each, of very different lengths.
fn step() -> (Vec<Vec<i64>>, Vec<Vec<i64>>) {
    let prompts: Vec<Vec<i64>> = [vec![5i64, 6, 7], vec![8, 9], vec![10, 11, 12, 13]]
        .into_iter()
        .flat_map(|p| [p.clone(), p])
        .collect();
    let completions = [2usize, 11, 3, 9, 1, 7]
        .iter()
        .enumerate()
        .map(|(i, &len)| (0..len as i64).map(|t| 20 + (t * 7 + i as i64) % 40).collect())
        .collect();
    (prompts, completions)
}

/// The weights after one step of `algorithm` from the model in `dir`.
fn weights_after(dir: &Path, algorithm: &AlgorithmConfig) -> Vec<Tensor> {
    let (prompts, completions) = step();
    let policy = load(dir);
    let reference = load(dir);
    // eps 1 makes AdamW's first step ≈ lr · gradient: the weights then compare the gradients
    // (at eps 1e-8 a near-zero gradient's rounding would swing its step by up to lr).
    let settings = AdamWSettings {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1.0,
        weight_decay: 0.0,
    };
    let mut optimizer = AdamW::new(policy.parameters(), settings);
    let batch = Batch {
        prompts: &prompts,
        completions: &completions,
        advantages: &[1.0, -1.0, 0.5, -0.5, -1.5, 1.5],
        truncated: &[false, true, false, false, false, false],
    };
    let stats = update_policy(
        &policy,
        Reference::Model(&reference),
        &mut optimizer,
        &batch,
        algorithm,
        1,
        10,
        None,
    )
    .unwrap();
    assert!(!stats.nonfinite && stats.updates > 0);
    policy
        .parameters()
        .iter()
        .map(|(_, p)| p.detach().copy())
        .collect()
}

#[test]
fn passes_by_length_and_budget_give_the_padded_passes_update() {
    let dir = tempfile::tempdir().unwrap();
    crpo_plugins_policy::presets::write_tiny(dir.path(), 3).unwrap();
    let initial: Vec<Tensor> = load(dir.path())
        .parameters()
        .iter()
        .map(|(_, p)| p.detach().copy())
        .collect();
    let (prompts, completions) = step();
    for loss_type in [LossType::Grpo, LossType::Bnpo, LossType::DrGrpo, LossType::Dapo] {
        for (accumulation, iterations) in [(3, 1), (1, 2)] {
            let padded = AlgorithmConfig {
                loss_type,
                mini_batch_size: 2,
                gradient_accumulation_steps: accumulation,
                num_iterations: iterations,
                beta: 0.1,
                learning_rate: 1.0,
                max_completion_length: 12,
                mask_truncated_completions: true,
                group_by_length: false,
                ..AlgorithmConfig::default()
            };
            let packed = AlgorithmConfig {
                group_by_length: true,
                max_tokens_per_micro_batch: Some(16),
                ..padded.clone()
            };
            // The two plans differ (else this compares a thing with itself).
            let counted = [true, false, true, true, true, true];
            let rows = Rows {
                prompts: &prompts,
                completions: &completions,
                counted: &counted,
            };
            let passes = |config| {
                plan(&rows, config)
                    .into_iter()
                    .map(|update| update.passes)
                    .collect::<Vec<_>>()
            };
            assert_ne!(passes(&padded), passes(&packed), "{loss_type:?}");

            let (a, b) = (
                weights_after(dir.path(), &padded),
                weights_after(dir.path(), &packed),
            );
            let mut largest_move = 0f64;
            for ((a, b), before) in a.iter().zip(&b).zip(&initial) {
                largest_move = largest_move.max((a - before).abs().max().double_value(&[]));
                let difference = (a - b).abs().max().double_value(&[]);
                assert!(
                    difference < 1e-6,
                    "{loss_type:?}, accumulation {accumulation}, {iterations} epochs: weights differ by {difference}"
                );
            }
            assert!(largest_move > 1e-3, "the update moved nothing ({largest_move})");
        }
    }
}

/// Every pass of the update scores the distribution the completions were sampled from:
/// softmax(logits / temperature), as TRL and verl do. The update's logged entropy is that of
/// the tempered distribution, not of the model's own.
#[test]
fn the_update_scores_completions_at_the_sampling_temperature() {
    let dir = tempfile::tempdir().unwrap();
    crpo_plugins_policy::presets::write_tiny(dir.path(), 3).unwrap();
    let (prompts, completions) = step();
    let mean_entropy = |temperature: f64| {
        let policy = load(dir.path());
        let scored =
            tch::no_grad(|| policy.sampled_logprobs(&prompts, &completions, temperature, false)).unwrap();
        (scored.entropies * &scored.mask)
            .sum(tch::Kind::Double)
            .double_value(&[])
            / scored.mask.sum(tch::Kind::Double).double_value(&[])
    };
    // Two epochs score the sampling policy in a pass of its own (the old log-probs): at a
    // learning rate too small to move the weights, its ratio to the current one is 1 (no
    // token clipped) only if both are tempered alike.
    for (temperature, num_iterations) in [(0.5, 1), (1.0, 1), (1.7, 1), (0.5, 2)] {
        let policy = load(dir.path());
        let reference = load(dir.path());
        let algorithm = AlgorithmConfig {
            temperature,
            num_iterations,
            learning_rate: 1e-12,
            beta: 0.1,
            max_completion_length: 12,
            ..AlgorithmConfig::default()
        };
        let mut optimizer = AdamW::new(policy.parameters(), algorithm.adam_settings());
        let batch = Batch {
            prompts: &prompts,
            completions: &completions,
            advantages: &[1.0, -1.0, 0.5, -0.5, -1.5, 1.5],
            truncated: &[false; 6],
        };
        let stats = update_policy(
            &policy,
            Reference::Model(&reference),
            &mut optimizer,
            &batch,
            &algorithm,
            1,
            1,
            None,
        )
        .unwrap();
        let expected = mean_entropy(temperature);
        assert!(
            (stats.entropy - expected).abs() < 1e-4,
            "T {temperature}, {num_iterations} epoch(s): the update's entropy {} is not the tempered distribution's {expected}",
            stats.entropy
        );
        // The reference scores the same tempered distribution: before the update, no KL.
        assert!(stats.kl.abs() < 1e-6, "T {temperature}: kl {}", stats.kl);
        assert_eq!(
            (stats.clip_low, stats.clip_high),
            (0.0, 0.0),
            "T {temperature}, {num_iterations} epoch(s): the old and current log-probs differ"
        );
    }
    assert!(
        (mean_entropy(0.5) - mean_entropy(1.0)).abs() > 1e-2,
        "the temperatures should differ"
    );
}
