//! Decode steps with fixed shapes, replayed as CUDA graphs on a GPU.
//!
//! A decode step of a small model is hundreds of small kernels; on a GPU launching them costs
//! more than the arithmetic. Captured once as a CUDA graph, a step is one launch. A graph
//! replays fixed shapes on fixed addresses, so here:
//! - the rows run come in buckets (the batch, then powers of two below it): finished rows are
//!   fed padding until the live ones fit a smaller bucket, then the live rows move to the
//!   front of the cache in place ([`KvCache::move_rows_to_front`]);
//! - attention reads a window of the cache that grows in steps of [`WINDOW_STEP`] positions
//!   ([`KvCache::fix_shapes`]), not the positions written so far;
//! - the step's token ids and mask are copied into fixed input tensors, and the logits read
//!   from the graph's output.
//!
//! Rows only shrink and the window only grows, so each (rows, window) pair is met once, for a
//! stretch of steps: its first step runs eagerly (warming libtorch's lazy state on the side
//! stream), the next is captured, and the rest replay it. Sampling stays outside the graph.
//! A capture that fails turns graphs off for the rest of the process, with a warning.
//! Without capture the same fixed shapes run eagerly: tests compare that path with the
//! ordinary one on the CPU.

use crpo_policy_sdk::{KeyValues, KvCache, PolicyModel};
use crpo_torch_ext::cuda_graph::{CudaGraph, SideStream};
use std::sync::atomic::{AtomicBool, Ordering};
use tch::{Device, Kind, Tensor};

/// Set once graphs failed in this process (a capture, or the side stream): later generations
/// decode eagerly rather than fail the same way again.
static CAPTURE_FAILED: AtomicBool = AtomicBool::new(false);

/// Whether graphs failed earlier in this process.
pub fn capture_failed_before() -> bool {
    CAPTURE_FAILED.load(Ordering::Relaxed)
}

/// Positions by which the attention window grows: a larger step wastes more attention on
/// positions not written yet, a smaller one captures more graphs.
pub const WINDOW_STEP: i64 = 256;

/// How the fixed-shape steps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedShapeSettings {
    /// Capture each (rows, window) pair's step as a CUDA graph and replay it (CUDA only).
    pub capture: bool,
    pub window_step: i64,
}

/// The decode steps of one generation with fixed shapes.
pub struct FixedShapeSteps {
    /// Row counts a step runs with, largest first.
    buckets: Vec<i64>,
    rows: i64,
    window_step: i64,
    pad_id: i64,
    /// `[batch, 1]` int64: the step's input, read by every step.
    ids: Tensor,
    mask: Tensor,
    graphs: Option<Graphs>,
}

/// The CUDA graph of the current (rows, window) pair and the side stream it lives on.
struct Graphs {
    /// The pair whose step ran eagerly once (the warm-up before its capture).
    warmed: Option<(i64, i64)>,
    current: Option<Captured>,
    _stream: SideStream,
}

struct Captured {
    key: (i64, i64),
    graph: CudaGraph,
    /// The step's logits, rewritten by each replay.
    logits: Tensor,
}

impl FixedShapeSteps {
    /// Fixes `cache`'s shapes (its rows are the batch, its prompts prefilled) for the steps
    /// that follow.
    pub fn start(
        settings: FixedShapeSettings,
        cache: &mut KvCache,
        pad_id: i64,
        device: Device,
    ) -> crpo_policy_sdk::Result<Self> {
        if settings.window_step < 1 {
            return Err(crpo_sdk::PluginError::failed(format!(
                "the attention window grows in steps of at least 1 position (window_step is {})",
                settings.window_step
            )));
        }
        let batch = cache.batch();
        cache.fix_shapes(window(cache.len(), cache.capacity(), settings.window_step))?;
        let graphs = match (settings.capture && !capture_failed_before(), device) {
            (true, Device::Cuda(index)) => match SideStream::enter(index) {
                Ok(stream) => Some(Graphs {
                    warmed: None,
                    current: None,
                    _stream: stream,
                }),
                Err(e) => {
                    graphs_off(&format!("cannot make a side stream current on cuda:{index}: {e}"));
                    None
                }
            },
            _ => None,
        };
        Ok(FixedShapeSteps {
            buckets: buckets(batch),
            rows: batch,
            window_step: settings.window_step,
            pad_id,
            ids: Tensor::zeros([batch, 1], (Kind::Int64, device)),
            mask: Tensor::zeros([batch, 1], (Kind::Int64, device)),
            graphs,
        })
    }

    /// Whether `running` live rows fit a smaller bucket: then they move to the front of the
    /// cache (`running` indexes the rows now run) and the steps run fewer rows.
    pub fn compact(&mut self, cache: &mut KvCache, running: &[usize]) -> bool {
        let rows = bucket(&self.buckets, running.len() as i64);
        if rows >= self.rows {
            return false;
        }
        let keep: Vec<i64> = running.iter().map(|&r| r as i64).collect();
        cache.move_rows_to_front(&Tensor::from_slice(&keep).to_device(self.ids.device()));
        self.rows = rows;
        true
    }

    /// Runs one step of the live rows' `ids` and 0/1 `mask` (fewer than the bucket's rows:
    /// the rest are fed padding); returns their logits `[live, vocab]`, the rows run, and
    /// whether a graph's replay ran it.
    pub fn step(
        &mut self,
        model: &dyn PolicyModel,
        cache: &mut KvCache,
        (ids, mask): (&[i64], &[i64]),
    ) -> crpo_policy_sdk::Result<(Tensor, i64, bool)> {
        let rows = self.rows;
        let live = ids.len() as i64;
        let fill = |values: &[i64], padding: i64, into: &Tensor| {
            let mut padded = values.to_vec();
            padded.resize(rows as usize, padding);
            into.narrow(0, 0, rows).copy_(
                &Tensor::from_slice(&padded)
                    .view([rows, 1])
                    .to_device(into.device()),
            );
        };
        fill(ids, self.pad_id, &self.ids);
        fill(mask, 0, &self.mask);
        let window = window(cache.len(), cache.capacity(), self.window_step);
        cache.set_window(window)?;
        let (logits, replayed) = match self.graphed_step(model, cache, (rows, window)) {
            Some(Ok(logits)) => (logits, true),
            Some(Err(e)) => return Err(e),
            None => (self.eager_step(model, cache)?, false),
        };
        cache.count_step(1);
        Ok((logits.narrow(0, 0, live), rows, replayed))
    }

    fn eager_step(&self, model: &dyn PolicyModel, cache: &KvCache) -> crpo_policy_sdk::Result<Tensor> {
        forward_front_rows(model, cache, (&self.ids, &self.mask), self.rows)
    }

    /// The step replayed from the pair's graph (captured first if the pair has warmed up);
    /// `None` where it runs eagerly: no graphs, the pair's warm-up, or a capture that failed
    /// (graphs are then off for the rest of the process).
    fn graphed_step(
        &mut self,
        model: &dyn PolicyModel,
        cache: &KvCache,
        key: (i64, i64),
    ) -> Option<crpo_policy_sdk::Result<Tensor>> {
        let graphs = self.graphs.as_mut()?;
        if let Some(captured) = graphs.current.as_ref().filter(|c| c.key == key) {
            return Some(replay(captured));
        }
        if graphs.warmed != Some(key) {
            graphs.warmed = Some(key);
            return None;
        }
        // The pair met before is never met again: the new graph takes over its memory pool.
        let previous = graphs.current.take();
        match capture(model, cache, (&self.ids, &self.mask), key, previous.as_ref()) {
            Ok(captured) => {
                drop(previous);
                let logits = replay(&captured);
                graphs.current = Some(captured);
                Some(logits)
            }
            Err(e) => {
                graphs_off(&format!("capturing a decode step of {} rows failed: {e}", key.0));
                // Leaving the side stream synchronizes the device: the eager steps after see
                // the inputs copied on it.
                self.graphs = None;
                None
            }
        }
    }
}

/// Turns CUDA graphs off for the rest of the process, saying why once.
fn graphs_off(why: &str) {
    if !CAPTURE_FAILED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "CUDA graphs are off for the rest of this process (decode steps run one kernel at a time): {why}"
        );
    }
}

/// Captures the step of `rows` over the first `window` positions (nothing runs yet), in the
/// memory pool of the graph before it.
fn capture(
    model: &dyn PolicyModel,
    cache: &KvCache,
    (ids, mask): (&Tensor, &Tensor),
    (rows, window): (i64, i64),
    previous: Option<&Captured>,
) -> Result<Captured, String> {
    // A pass with grad could draw dropout masks, which a replay would repeat.
    debug_assert!(!crpo_torch_ext::grad_enabled(), "decode steps run without grad");
    let mut graph = CudaGraph::new()?;
    let logits = graph.capture(previous.map(|p| &p.graph), || {
        forward_front_rows(model, cache, (ids, mask), rows).map_err(|e| e.to_string())
    })?;
    Ok(Captured {
        key: (rows, window),
        graph,
        logits,
    })
}

/// The step of the first `rows` rows: the fixed inputs' rows through a view of the cache's
/// rows (what runs eagerly and what is captured are the same calls).
fn forward_front_rows(
    model: &dyn PolicyModel,
    cache: &KvCache,
    (ids, mask): (&Tensor, &Tensor),
    rows: i64,
) -> crpo_policy_sdk::Result<Tensor> {
    let mut view = cache.front_rows(rows)?;
    model.forward_cached(&ids.narrow(0, 0, rows), &mask.narrow(0, 0, rows), &mut view)
}

fn replay(captured: &Captured) -> crpo_policy_sdk::Result<Tensor> {
    captured.graph.replay().map_err(|e| {
        crpo_sdk::PluginError::failed(format!("replaying a decode step's CUDA graph failed: {e}"))
    })?;
    Ok(captured.logits.shallow_clone())
}

/// The row counts steps run with: the batch, then the powers of two below it.
fn buckets(batch: i64) -> Vec<i64> {
    let mut buckets = vec![batch];
    let mut power = 1i64;
    while power * 2 < batch {
        power *= 2;
    }
    while power >= 1 && power < batch {
        buckets.push(power);
        power /= 2;
    }
    buckets
}

/// The smallest bucket that holds `rows`.
fn bucket(buckets: &[i64], rows: i64) -> i64 {
    buckets
        .iter()
        .copied()
        .filter(|&b| b >= rows)
        .min()
        .unwrap_or(buckets[0])
}

/// The attention window of a step after `len` positions: the next multiple of `step` that
/// holds the new one, at most the capacity.
fn window(len: i64, capacity: i64, step: i64) -> i64 {
    ((len + 1 + step - 1) / step * step).min(capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_the_batch_then_powers_of_two_below_it() {
        assert_eq!(buckets(64), vec![64, 32, 16, 8, 4, 2, 1]);
        assert_eq!(buckets(48), vec![48, 32, 16, 8, 4, 2, 1]);
        assert_eq!(buckets(1), vec![1]);
        assert_eq!(buckets(3), vec![3, 2, 1]);
        let b = buckets(48);
        assert_eq!(
            (bucket(&b, 33), bucket(&b, 32), bucket(&b, 17), bucket(&b, 1)),
            (48, 32, 32, 1)
        );
    }

    #[test]
    fn the_window_holds_the_next_position_in_whole_steps_within_the_capacity() {
        assert_eq!(window(0, 1000, 256), 256);
        assert_eq!(window(255, 1000, 256), 256);
        assert_eq!(window(256, 1000, 256), 512);
        assert_eq!(window(900, 1000, 256), 1000);
        assert_eq!(window(5, 7, 4), 7);
    }
}
