//! Generation: B prompts of different lengths (left-padded) decoded together over a key/value
//! cache the engine allocates once for the batch, each sequence stopping at its own EOS.
//!
//! - G samples of one prompt share its prefill: each distinct run of equal consecutive
//!   prompts is run once and its cache rows repeated.
//! - Finished sequences leave the batch: once a quarter of the rows still decoded have
//!   finished, the cache keeps only the live rows, so a step costs what its live rows cost
//!   (a few compactions per generation, each one cache copy).
//! - A model that keeps its own cache (a library built before sdk 1.4) is fed every row to
//!   the end, finished ones as padding nothing attends to.
//! - On a GPU, decode steps run with fixed shapes and replay as CUDA graphs
//!   ([`super::fixed_shape_steps`]) where the model allows it; `CRPO_CUDA_GRAPHS=0` turns
//!   that off (each step then launches its kernels one by one, as on the CPU).

use super::fixed_shape_steps::{FixedShapeSettings, FixedShapeSteps, WINDOW_STEP};
use super::padding::{left_pad, runs};
use super::sampling::{sample_next, sequence_rngs, SamplingConfig};
use crpo_policy_sdk::{repeat_index, KeyValues, KvCache, PolicyModel};
use tch::{Device, Kind, Tensor};

/// How decode steps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeSteps {
    /// Each step over the positions written so far, finished rows dropped as they add up.
    Eager,
    /// Fixed shapes (row buckets, a growing attention window), captured as CUDA graphs when
    /// `capture` is set.
    Fixed(FixedShapeSettings),
}

impl DecodeSteps {
    /// CUDA graphs on a GPU for a model whose steps can be captured, unless
    /// `CRPO_CUDA_GRAPHS` turns them off ([`graphs_disabled_by_env`]); eager steps otherwise.
    pub fn for_model(model: &dyn PolicyModel, device: Device) -> Self {
        let disabled = graphs_disabled_by_env(std::env::var("CRPO_CUDA_GRAPHS").ok().as_deref());
        let capturable = model.decode_step_is_capturable() && model.cache_layout().is_some();
        let failed = super::fixed_shape_steps::capture_failed_before();
        // A shim built without CUDA's headers has no graphs (its build said so).
        let built = crpo_torch_ext::built_with_cuda();
        if device.is_cuda() && capturable && built && !disabled && !failed {
            DecodeSteps::Fixed(FixedShapeSettings {
                capture: true,
                window_step: WINDOW_STEP,
            })
        } else {
            DecodeSteps::Eager
        }
    }
}

/// Whether `CRPO_CUDA_GRAPHS` (its value, if set) turns CUDA graphs off: `0`, `false`, `off`
/// or `no`. Any other value but `1`, `true`, `on` or `yes` leaves them on, with a warning that
/// names it (a typo must not pass for a switch).
fn graphs_disabled_by_env(value: Option<&str>) -> bool {
    let Some(value) = value else {
        return false;
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "0" | "false" | "off" | "no" => true,
        "1" | "true" | "on" | "yes" | "" => false,
        _ => {
            crate::warn_once::warn_once("CRPO_CUDA_GRAPHS", || {
                format!("CRPO_CUDA_GRAPHS={value:?} is neither on (1, true, on, yes) nor off (0, false, off, no): CUDA graphs stay on")
            });
            false
        }
    }
}

/// One generated completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Generated ids, the EOS included when one was produced.
    pub ids: Vec<i64>,
    /// Whether it ended with EOS (otherwise it was cut at `max_new_tokens`).
    pub finished: bool,
}

/// The tokenizer facts generation needs.
pub struct TokenSpace<'a> {
    pub eos_ids: &'a [u32],
    pub pad_id: u32,
    /// Ids at or above this are padded embedding rows no tokenizer id maps to: never sampled.
    pub usable_vocab: usize,
}

/// What a generation cost, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GenerationStats {
    /// Decode steps after the prefill.
    pub decode_steps: usize,
    /// Rows run summed over decode steps (finished rows still in the batch included).
    pub row_steps: usize,
    /// Bytes of the key/value cache as allocated.
    pub kv_cache_bytes: usize,
    /// Decode steps replayed from a CUDA graph.
    pub graphed_steps: usize,
}

/// Generates one completion per prompt with `model` (its weights in `kind` on `device`),
/// its decode steps run as `steps` says.
pub fn generate(
    model: &dyn PolicyModel,
    (kind, device): (Kind, Device),
    prompts: &[Vec<i64>],
    tokens: &TokenSpace<'_>,
    config: &SamplingConfig,
    steps: DecodeSteps,
) -> crpo_policy_sdk::Result<(Vec<Completion>, GenerationStats)> {
    let _no_grad = tch::no_grad_guard();
    let batch = prompts.len();
    let mut completions = vec![
        Completion {
            ids: Vec::new(),
            finished: false,
        };
        batch
    ];
    let mut stats = GenerationStats::default();
    if batch == 0 {
        return Ok((completions, stats));
    }
    if let Some(empty) = prompts.iter().position(Vec::is_empty) {
        return Err(crpo_sdk::PluginError::failed(format!(
            "prompt {empty} of the batch has no tokens: a completion continues a prompt of at least one token"
        )));
    }
    let pad_id = tokens.pad_id as i64;
    let (distinct, repeats) = runs(prompts);
    let (ids, mask) = left_pad(&distinct, pad_id, device);
    let capacity = ids.size()[1] + config.max_new_tokens as i64;
    let rows = repeat_index(&repeats, device)?;
    let mut cache = match model.cache_layout() {
        Some(layout) => KvCache::new(layout, distinct.len() as i64, capacity, kind, device),
        None => KvCache::kept_by_model(batch as i64, capacity, device),
    };
    stats.kv_cache_bytes = cache.bytes() * batch / distinct.len();
    let result = decode(
        model,
        &mut cache,
        (&ids, &mask, &rows),
        (tokens, config, steps),
        &mut completions,
        &mut stats,
    );
    model.release_cache(&mut cache);
    result.map(|()| (completions, stats))
}

/// The prefill and decode loop of [`generate`].
fn decode(
    model: &dyn PolicyModel,
    cache: &mut KvCache,
    (ids, mask, rows): (&Tensor, &Tensor, &Tensor),
    (tokens, config, steps): (&TokenSpace<'_>, &SamplingConfig, DecodeSteps),
    completions: &mut [Completion],
    stats: &mut GenerationStats,
) -> crpo_policy_sdk::Result<()> {
    let device = ids.device();
    let pad_id = tokens.pad_id as i64;
    let mut logits = if cache.is_owned_by_engine() {
        let last = model.forward_cached(ids, mask, cache)?;
        cache.select_rows(rows);
        last.index_select(0, rows)
    } else {
        model.forward_cached(&ids.index_select(0, rows), &mask.index_select(0, rows), cache)?
    };
    let mut fixed = match steps {
        DecodeSteps::Fixed(shapes) if cache.is_owned_by_engine() && config.max_new_tokens > 1 => {
            Some(FixedShapeSteps::start(shapes, cache, pad_id, device)?)
        }
        _ => None,
    };
    let eos: Vec<i64> = tokens.eos_ids.iter().map(|&id| id as i64).collect();
    let usable_vocab = tokens.usable_vocab as i64;
    let mut rngs = sequence_rngs(config.seed, config.first_stream, completions.len());
    // The sequence each cache row decodes, and whether each sequence is done (EOS or budget).
    let mut live: Vec<usize> = (0..completions.len()).collect();
    let mut done: Vec<bool> = (0..completions.len()).map(|i| config.budget(i) == 0).collect();
    for generated in 0..config.max_new_tokens {
        let scores = logits.to_kind(Kind::Float);
        let finite = crpo_policy_sdk::tensor::all_finite(&scores)
            .map_err(|e| crpo_sdk::PluginError::failed(format!("cannot check the model's logits: {e}")))?;
        if !finite {
            return Err(crpo_sdk::PluginError::failed(format!(
                "the model's logits are not finite (NaN or ±inf) at generated token {}: its weights have diverged or overflow in this dtype",
                generated + 1
            )));
        }
        let vocab = scores.size()[1];
        if usable_vocab < vocab {
            let _ = scores
                .narrow(1, usable_vocab, vocab - usable_vocab)
                .fill_(f64::NEG_INFINITY);
        }
        if generated < config.min_new_tokens {
            for &id in &eos {
                let _ = scores.narrow(1, id, 1).fill_(f64::NEG_INFINITY);
            }
        }
        let next = sample_next(&scores, config, &mut rngs, &live);
        let (mut step_ids, mut step_mask) = (Vec::with_capacity(live.len()), Vec::with_capacity(live.len()));
        for (&sequence, &token) in live.iter().zip(&next) {
            if done[sequence] {
                // Done rows still in the batch are fed padding that nothing attends to.
                step_ids.push(pad_id);
                step_mask.push(0i64);
            } else {
                let completion = &mut completions[sequence];
                completion.ids.push(token);
                completion.finished = eos.contains(&token);
                done[sequence] = completion.finished || completion.ids.len() >= config.budget(sequence);
                step_ids.push(token);
                step_mask.push(1);
            }
        }
        let running: Vec<usize> = (0..live.len()).filter(|&row| !done[live[row]]).collect();
        if running.is_empty() || generated + 1 == config.max_new_tokens {
            break;
        }
        let compacted = match &mut fixed {
            Some(fixed) => fixed.compact(cache, &running),
            None if cache.is_owned_by_engine() && (live.len() - running.len()) * 4 >= live.len() => {
                let keep = running.iter().map(|&r| r as i64).collect::<Vec<_>>();
                cache.select_rows(&Tensor::from_slice(&keep).to_device(device));
                true
            }
            None => false,
        };
        if compacted {
            step_ids = running.iter().map(|&r| step_ids[r]).collect();
            step_mask = running.iter().map(|&r| step_mask[r]).collect();
            live = running.iter().map(|&r| live[r]).collect();
        }
        let rows_run = match &mut fixed {
            Some(fixed) => {
                let (step_logits, rows_run, replayed) = fixed.step(model, cache, (&step_ids, &step_mask))?;
                logits = step_logits;
                stats.graphed_steps += usize::from(replayed);
                rows_run as usize
            }
            None => {
                let shape = [live.len() as i64, 1];
                let step_ids = Tensor::from_slice(&step_ids).view(shape).to_device(device);
                let step_mask = Tensor::from_slice(&step_mask).view(shape).to_device(device);
                logits = model.forward_cached(&step_ids, &step_mask, cache)?;
                live.len()
            }
        };
        stats.decode_steps += 1;
        stats.row_steps += rows_run;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_turns_graphs_off_by_its_usual_words_only() {
        for off in ["0", "false", "OFF", " no "] {
            assert!(graphs_disabled_by_env(Some(off)), "{off}");
        }
        for on in ["1", "true", "On", "yes", "", "disable"] {
            assert!(!graphs_disabled_by_env(Some(on)), "{on}");
        }
        assert!(!graphs_disabled_by_env(None));
    }
}
