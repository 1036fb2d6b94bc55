//! Per-token log-probabilities and entropies of completions given their prompts: what the
//! CRPO loss needs from the policy (with grad) and the frozen reference (call under no_grad),
//! through the model's shared-prompt pass (`PolicyModel::forward_continuations`).

use super::padding::{left_pad, runs};
use crpo_policy_sdk::PolicyModel;
use tch::{Device, Kind, Tensor};

/// `[B, C]` tensors over completion tokens (C = longest completion); `mask` is 1 on real tokens.
#[derive(Debug)]
pub struct TokenLogProbs {
    pub logprobs: Tensor,
    pub entropies: Tensor,
    pub mask: Tensor,
}

/// Prompts and their completions as a grouped forward takes them: each distinct run of equal
/// consecutive prompts once (`[P, Tp]`, left-padded) with how many completions continue it,
/// and the completions `[N, C]` (right-padded). A step's G completions of one prompt so share
/// one prompt pass.
#[derive(Debug)]
pub struct ContinuationBatch {
    pub prompt_ids: Tensor,
    pub prompt_mask: Tensor,
    /// Completions continuing each prompt row, in order (sums to N).
    pub repeats: Vec<i64>,
    pub continuation_ids: Tensor,
    pub continuation_mask: Tensor,
}

impl ContinuationBatch {
    /// `prompts[i]` is the prompt of `completions[i]`.
    pub fn new(
        prompts: &[Vec<i64>],
        completions: &[Vec<i64>],
        pad_id: i64,
        device: Device,
    ) -> anyhow::Result<Self> {
        if prompts.len() != completions.len() {
            anyhow::bail!("{} prompts for {} completions", prompts.len(), completions.len());
        }
        if prompts.iter().any(Vec::is_empty) {
            anyhow::bail!("a completion's prompt is empty: every completion needs a prompt to condition on");
        }
        let (distinct, repeats) = runs(prompts);
        let (prompt_ids, prompt_mask) = left_pad(&distinct, pad_id, device);
        let width = completions.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let (mut ids, mut mask) = (
            Vec::with_capacity(completions.len() * width),
            Vec::with_capacity(completions.len() * width),
        );
        for completion in completions {
            let right = width - completion.len();
            ids.extend(
                completion
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(pad_id, right)),
            );
            mask.extend(std::iter::repeat_n(1i64, completion.len()).chain(std::iter::repeat_n(0, right)));
        }
        let shape = [completions.len() as i64, width as i64];
        Ok(ContinuationBatch {
            prompt_ids,
            prompt_mask,
            repeats,
            continuation_ids: Tensor::from_slice(&ids).view(shape).to_device(device),
            continuation_mask: Tensor::from_slice(&mask).view(shape).to_device(device),
        })
    }
}

/// Log-probs and entropies of `batch`'s completions under `model`, of the distribution sampled
/// at `temperature` (the logits divided by it, as TRL and verl score completions: 1 is the
/// model's own); the entropies carry no gradient unless `entropy_grad`.
pub fn completion_logprobs(
    model: &dyn PolicyModel,
    batch: &ContinuationBatch,
    temperature: f64,
    entropy_grad: bool,
) -> crpo_policy_sdk::Result<TokenLogProbs> {
    let logits = model.forward_continuations(
        &batch.prompt_ids,
        &batch.prompt_mask,
        &batch.repeats,
        &batch.continuation_ids,
        &batch.continuation_mask,
    )?;
    let (logprobs, entropies) =
        target_logprobs_and_entropies(logits, &batch.continuation_ids, temperature, entropy_grad);
    let mask = batch.continuation_mask.to_kind(Kind::Float);
    Ok(TokenLogProbs {
        logprobs: logprobs * &mask,
        entropies: entropies * &mask,
        mask,
    })
}

/// Elements of a `[positions, vocab]` chunk of the log-softmax (16 MiB of f32): a few
/// positions of a large vocabulary, so that no vocabulary-sized temporary spans the whole
/// pass.
const CHUNK_ELEMENTS: i64 = 1 << 22;

/// From logits `[B, C, V]` and target ids `[B, C]`: each target's log-probability and each
/// position's entropy −Σ p·log p under softmax(logits / `temperature`), both `[B, C]`, in f32;
/// the entropies carry no gradient unless `entropy_grad` (an entropy bonus).
///
/// The vocabulary-sized tensors are a pass's largest, so the log-softmax is taken a few
/// positions at a time (`CHUNK_ELEMENTS`). Without a graph (the reference's and the sampling
/// policy's passes) each chunk is let go once gathered: the logits are the only whole one.
/// With a graph autograd keeps every chunk's log-softmax (its backward needs it) but not
/// the logits, and the backward works chunk by chunk into one gradient of the logits: two
/// vocabulary-sized tensors live at a time, where a whole log-softmax's backward needed
/// three and its entropy four (docs/memory.md).
pub fn target_logprobs_and_entropies(
    logits: Tensor,
    targets: &Tensor,
    temperature: f64,
    entropy_grad: bool,
) -> (Tensor, Tensor) {
    let vocab = logits.size().last().copied().unwrap_or(1).max(1);
    by_chunks(
        logits,
        targets,
        temperature,
        entropy_grad,
        (CHUNK_ELEMENTS / vocab).max(1),
    )
}

/// [`target_logprobs_and_entropies`], `positions` at a time.
fn by_chunks(
    logits: Tensor,
    targets: &Tensor,
    temperature: f64,
    entropy_grad: bool,
    positions: i64,
) -> (Tensor, Tensor) {
    let shape = targets.size();
    let vocab = logits.size().last().copied().unwrap_or(1);
    let device = logits.device();
    let chunks = logits.reshape([-1, vocab]).split(positions, 0);
    drop(logits);
    let targets = targets.reshape([-1, 1]);
    let entropy = |log_p: &Tensor| -(log_p.exp() * log_p).sum_dim_intlist(-1, false, Kind::Float);
    let (mut logprobs, mut entropies, mut start) = (Vec::new(), Vec::new(), 0);
    for chunk in chunks {
        let n = chunk.size()[0];
        // At 1 the logits are used as they are (no copy, and the same bits as before).
        // Divided in f32: a bf16 division would round the logits a second time.
        let chunk = if temperature == 1.0 {
            chunk
        } else {
            chunk.to_kind(Kind::Float) / temperature
        };
        let log_p = chunk.log_softmax(-1, Kind::Float);
        logprobs.push(log_p.gather(1, &targets.narrow(0, start, n), false).view([-1]));
        entropies.push(if entropy_grad {
            entropy(&log_p)
        } else {
            tch::no_grad(|| entropy(&log_p.detach()))
        });
        start += n;
    }
    let whole = |parts: Vec<Tensor>| {
        if parts.is_empty() {
            Tensor::zeros(shape.as_slice(), (Kind::Float, device))
        } else {
            Tensor::cat(&parts, 0).view(shape.as_slice())
        }
    };
    (whole(logprobs), whole(entropies))
}

/// Moves `[B, C]` rows to plain vectors of each completion's own length (for tests and logs).
pub fn rows(tensor: &Tensor, lengths: &[usize]) -> Vec<Vec<f64>> {
    let tensor = tensor.to_device(Device::Cpu).to_kind(Kind::Double);
    lengths
        .iter()
        .enumerate()
        .map(|(i, &len)| Vec::<f64>::try_from(tensor.get(i as i64).narrow(0, 0, len as i64)).unwrap())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_probs_and_entropy_by_hand() {
        // p = (0.5, 0.25, 0.25): log p(token 1) = ln 0.25 = −1.386294;
        // H = −(0.5 ln 0.5 + 2 · 0.25 ln 0.25) = 1.039721.
        let logits = Tensor::from_slice(&[0.5f32, 0.25, 0.25]).log().view([1, 1, 3]) + 7.0;
        let (logprobs, entropies) =
            target_logprobs_and_entropies(logits, &Tensor::from_slice(&[1i64]).view([1, 1]), 1.0, true);
        assert!((logprobs.double_value(&[0, 0]) + 1.386_294).abs() < 1e-5);
        assert!((entropies.double_value(&[0, 0]) - 1.039_721).abs() < 1e-5);
    }

    /// The distribution sampled at T is softmax(logits / T), as TRL and verl score it: logits
    /// (2, 1, 0, −1) at T = 0.6 give token 0 a log-prob of −0.20806 and an entropy of 0.58766
    /// (at T = 1: −0.44019 and 0.94754).
    #[test]
    fn log_probs_and_entropy_are_of_the_tempered_distribution() {
        let logits = || Tensor::from_slice(&[2f32, 1.0, 0.0, -1.0]).view([1, 1, 4]);
        let token = Tensor::from_slice(&[0i64]).view([1, 1]);
        for (temperature, logprob, entropy) in [(0.6, -0.208_06, 0.587_66), (1.0, -0.440_19, 0.947_54)] {
            let (logprobs, entropies) = target_logprobs_and_entropies(logits(), &token, temperature, false);
            assert!(
                (logprobs.double_value(&[0, 0]) - logprob).abs() < 1e-4,
                "T {temperature}: {logprobs}"
            );
            assert!(
                (entropies.double_value(&[0, 0]) - entropy).abs() < 1e-4,
                "T {temperature}: {entropies}"
            );
        }
    }

    #[test]
    fn entropy_leaves_the_graph_unless_asked() {
        let logits = Tensor::from_slice(&[0.1f32, 0.7, -0.3])
            .view([1, 1, 3])
            .set_requires_grad(true);
        let targets = Tensor::from_slice(&[2i64]).view([1, 1]);
        let (logprobs, detached) =
            target_logprobs_and_entropies(logits.shallow_clone(), &targets, 1.0, false);
        assert!(logprobs.requires_grad() && !detached.requires_grad());
        let (_, tracked) = target_logprobs_and_entropies(logits, &targets, 1.0, true);
        assert!(tracked.requires_grad());
        assert!((tracked.double_value(&[0, 0]) - detached.double_value(&[0, 0])).abs() < 1e-7);
    }

    #[test]
    fn chunks_give_the_whole_log_softmax_s_values_and_gradients() {
        tch::manual_seed(0);
        let logits = Tensor::randn([2, 3, 5], (Kind::Float, Device::Cpu));
        let targets = Tensor::from_slice(&[0i64, 4, 2, 1, 3, 0]).view([2, 3]);
        // Per position and target, from the whole log-softmax; the gradient of
        // Σ log-probs + Σ entropies with respect to the logits.
        let whole = |logits: &Tensor| {
            let log_p = logits.log_softmax(-1, Kind::Float);
            let logprobs = log_p.gather(-1, &targets.unsqueeze(-1), false).squeeze_dim(-1);
            (
                logprobs,
                -(log_p.exp() * &log_p).sum_dim_intlist(-1, false, Kind::Float),
            )
        };
        let gradient = |f: &dyn Fn(&Tensor) -> (Tensor, Tensor)| {
            let leaf = logits.copy().set_requires_grad(true);
            let (logprobs, entropies) = f(&leaf);
            (logprobs.sum(Kind::Float) + entropies.sum(Kind::Float)).backward();
            (logprobs.detach(), entropies.detach(), leaf.grad())
        };
        let expected = gradient(&whole);
        // Chunks of 4 positions: 4 + 2.
        let chunked = gradient(&|leaf| by_chunks(leaf.shallow_clone(), &targets, 1.0, true, 4));
        let close = |a: &Tensor, b: &Tensor| a.allclose(b, 1e-6, 1e-6, false);
        assert!(close(&expected.0, &chunked.0) && close(&expected.1, &chunked.1));
        assert!(close(&expected.2, &chunked.2), "{} vs {}", expected.2, chunked.2);
        // Without a graph: the same values.
        let (plain, plain_entropies) = target_logprobs_and_entropies(logits, &targets, 1.0, false);
        assert!(close(&expected.0, &plain) && close(&expected.1, &plain_entropies));
    }

    #[test]
    fn continuation_batch_pads_prompts_left_and_completions_right() {
        let batch = ContinuationBatch::new(
            &[vec![7, 8], vec![7, 8], vec![9]],
            &[vec![1], vec![2, 3], vec![4]],
            0,
            Device::Cpu,
        )
        .unwrap();
        let flat = |t: &Tensor| Vec::<i64>::try_from(t.view([-1])).unwrap();
        assert_eq!(flat(&batch.prompt_ids), vec![7, 8, 0, 9]);
        assert_eq!(flat(&batch.prompt_mask), vec![1, 1, 0, 1]);
        assert_eq!(batch.repeats, vec![2, 1]);
        assert_eq!(flat(&batch.continuation_ids), vec![1, 0, 2, 3, 4, 0]);
        assert_eq!(flat(&batch.continuation_mask), vec![1, 0, 1, 1, 1, 0]);
    }
}
