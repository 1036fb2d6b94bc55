//! Per-token log-probabilities and entropies of completions given their prompts: what the
//! CRPO loss needs from the policy (with grad) and the frozen reference (call under no_grad).

use crate::qwen2::DecoderModel;
use tch::{Device, Kind, Tensor};

/// `[B, C]` tensors over completion tokens (C = longest completion); `mask` is 1 on real tokens.
#[derive(Debug)]
pub struct TokenLogProbs {
    pub logprobs: Tensor,
    pub entropies: Tensor,
    pub mask: Tensor,
}

/// Lays out `[pad… prompt | completion …pad]` so every completion starts in the same column,
/// runs one forward pass, and reads each completion token's log-prob from the previous column.
pub fn completion_logprobs(
    model: &DecoderModel,
    prompts: &[Vec<i64>],
    completions: &[Vec<i64>],
    pad_id: i64,
) -> TokenLogProbs {
    let forward = |ids: &Tensor, mask: &Tensor, first: i64| {
        let hidden = model.hidden_states(ids, mask, None);
        let width = hidden.size()[1];
        Ok::<_, std::convert::Infallible>(model.logits(&hidden.narrow(1, first, width - first)))
    };
    match completion_logprobs_with(forward, model.device(), prompts, completions, pad_id) {
        Ok(logprobs) => logprobs,
    }
}

/// [`completion_logprobs`] over any forward `(ids, mask, first) → logits of positions first..T`
/// `[B, T - first, V]` (no cache), so policies loaded from plugin libraries are scored the
/// same way and no LM head runs over prompt positions.
pub fn completion_logprobs_with<E>(
    forward: impl FnOnce(&Tensor, &Tensor, i64) -> Result<Tensor, E>,
    device: Device,
    prompts: &[Vec<i64>],
    completions: &[Vec<i64>],
    pad_id: i64,
) -> Result<TokenLogProbs, E> {
    assert_eq!(prompts.len(), completions.len(), "one completion per prompt");
    let prompt_width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let completion_width = completions.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let width = prompt_width + completion_width;
    let (mut ids, mut mask) = (
        Vec::with_capacity(prompts.len() * width),
        Vec::with_capacity(prompts.len() * width),
    );
    for (prompt, completion) in prompts.iter().zip(completions) {
        let (left, right) = (prompt_width - prompt.len(), completion_width - completion.len());
        ids.extend(std::iter::repeat_n(pad_id, left));
        ids.extend(prompt.iter().chain(completion).copied());
        ids.extend(std::iter::repeat_n(pad_id, right));
        mask.extend(std::iter::repeat_n(0i64, left));
        mask.extend(std::iter::repeat_n(1i64, prompt.len() + completion.len()));
        mask.extend(std::iter::repeat_n(0i64, right));
    }
    let shape = [prompts.len() as i64, width as i64];
    let ids = Tensor::from_slice(&ids).view(shape).to_device(device);
    let mask = Tensor::from_slice(&mask).view(shape).to_device(device);
    assert!(
        prompt_width > 0,
        "every completion needs a prompt to condition on"
    );
    // Column prompt_width-1+j predicts completion token j: logits from there on only.
    let first = prompt_width as i64 - 1;
    let logits = forward(&ids, &mask, first)?;
    let predicting = logits.narrow(1, 0, completion_width as i64).to_kind(Kind::Float);
    let targets = ids.narrow(1, prompt_width as i64, completion_width as i64);
    let (logprobs, entropies) = target_logprobs_and_entropies(&predicting, &targets);
    let completion_mask = mask
        .narrow(1, prompt_width as i64, completion_width as i64)
        .to_kind(Kind::Float);
    Ok(TokenLogProbs {
        logprobs: logprobs * &completion_mask,
        entropies: entropies * &completion_mask,
        mask: completion_mask,
    })
}

/// From logits `[B, C, V]` (f32) and target ids `[B, C]`: each target's log-probability and
/// each position's entropy −Σ p·log p, both `[B, C]`.
pub fn target_logprobs_and_entropies(logits: &Tensor, targets: &Tensor) -> (Tensor, Tensor) {
    let log_softmax = logits.log_softmax(-1, Kind::Float);
    let logprobs = log_softmax
        .gather(-1, &targets.unsqueeze(-1), false)
        .squeeze_dim(-1);
    let entropies = -(log_softmax.exp() * &log_softmax).sum_dim_intlist(-1, false, Kind::Float);
    (logprobs, entropies)
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
            target_logprobs_and_entropies(&logits, &Tensor::from_slice(&[1i64]).view([1, 1]));
        assert!((logprobs.double_value(&[0, 0]) + 1.386_294).abs() < 1e-5);
        assert!((entropies.double_value(&[0, 0]) - 1.039_721).abs() < 1e-5);
    }
}
