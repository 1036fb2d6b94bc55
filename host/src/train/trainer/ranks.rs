//! What the ranks of a distributed run exchange around a step: rollouts, the state a resume
//! starts from, a check that their models agree, and a stop signal any of them received.

use crate::distributed::World;
use crate::rollout::Policy;
use crate::train::checkpoint::TrainerState;
use crate::train::rollouts::Group;
use anyhow::{bail, Context};

/// Every rank's groups, in rank order (the step's order, as shares are contiguous), on every
/// rank: advantages, metrics and the update then see the whole step.
pub(super) fn gather_groups(world: &World, groups: Vec<Group>) -> anyhow::Result<Vec<Group>> {
    let mine = serde_json::to_vec(&groups)?;
    let mut all = Vec::new();
    for (rank, bytes) in world.all_gather("gathering rollouts", &mine)?.iter().enumerate() {
        let theirs: Vec<Group> = serde_json::from_slice(bytes)
            .with_context(|| format!("rank {rank}'s rollouts do not read back"))?;
        all.extend(theirs);
    }
    Ok(all)
}

/// Rank 0's trainer state (where a resumed run continues), on every rank.
pub(super) fn share_state(
    world: &World,
    state: Option<TrainerState>,
) -> anyhow::Result<Option<TrainerState>> {
    let mine = if world.is_main() {
        serde_json::to_vec(&state)?
    } else {
        Vec::new()
    };
    let all = world.all_gather("sharing the trainer state", &mine)?;
    Ok(serde_json::from_slice(&all[0])?)
}

/// After the broadcast, the models must compute the same: frozen weights (LoRA's base, the
/// reference) are loaded by each rank from its own files and not broadcast. Compares each
/// rank's log-probs of one fixed sequence with rank 0's.
pub(super) fn check_same_model(
    world: &World,
    policy: &Policy,
    reference: Option<&Policy>,
) -> anyhow::Result<()> {
    let (prompt, completion) = (vec![vec![1i64, 2, 3]], vec![vec![4i64, 5]]);
    let _guard = tch::no_grad_guard();
    let mut values: Vec<f64> = Vec::new();
    for model in std::iter::once(policy).chain(reference) {
        let scored = model.logprobs(&prompt, &completion, false)?.logprobs;
        values.extend(
            Vec::<f32>::try_from(scored.reshape([-1]).to_kind(tch::Kind::Float))?
                .iter()
                .map(|&v| f64::from(v)),
        );
    }
    if policy.adapters {
        let base = policy.base_logprobs(&prompt, &completion, 1.0)?.logprobs;
        values.extend(
            Vec::<f32>::try_from(base.reshape([-1]).to_kind(tch::Kind::Float))?
                .iter()
                .map(|&v| f64::from(v)),
        );
    }
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let all = world.all_gather("comparing the models", &bytes)?;
    let read = |bytes: &[u8]| -> Vec<f64> {
        bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect()
    };
    let first = read(&all[0]);
    for (rank, theirs) in all.iter().enumerate().skip(1) {
        let theirs = read(theirs);
        let differs = theirs.len() != first.len()
            || theirs
                .iter()
                .zip(&first)
                .any(|(a, b)| (a - b).abs() > 1e-3 * (1.0 + b.abs()));
        if differs {
            bail!(
                "rank {rank}'s model computes other log-probs than rank 0's after the broadcast: its frozen weights differ (is model.path the same files on every machine?)"
            );
        }
    }
    Ok(())
}

/// The signal any rank received, on every rank.
pub(super) fn any_rank_signalled(world: &World, signal: Option<i32>) -> anyhow::Result<Option<i32>> {
    let mine = signal.map(|s| s.to_le_bytes().to_vec()).unwrap_or_default();
    Ok(world
        .all_gather("agreeing whether to stop", &mine)?
        .iter()
        .find(|bytes| bytes.len() == 4)
        .map(|bytes| i32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"))))
}
