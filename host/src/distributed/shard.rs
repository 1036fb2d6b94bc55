//! Who does what across ranks: each rank's contiguous share of a step's prompts (so groups
//! never span ranks) and which rank runs each forward pass of an update. Pure functions: every
//! rank computes the same answer from the same inputs, with no messages.

use std::ops::Range;

/// Rank `rank`'s share of `count` items among `world` ranks: contiguous, in rank order, the
/// first `count % world` ranks one item more.
pub fn share(count: usize, rank: usize, world: usize) -> Range<usize> {
    let world = world.max(1);
    let (base, extra) = (count / world, count % world);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// The rank that runs each pass, given each pass's cost (its padded tokens): longest first to
/// the least loaded rank (ties to the lower rank), so the ranks' work is even and every rank
/// agrees.
pub fn assign_passes(costs: &[usize], world: usize) -> Vec<usize> {
    let world = world.max(1);
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by_key(|&p| (std::cmp::Reverse(costs[p]), p));
    let mut load = vec![0usize; world];
    let mut owner = vec![0; costs.len()];
    for p in order {
        let rank = (0..world)
            .min_by_key(|&r| (load[r], r))
            .expect("at least one rank");
        load[rank] += costs[p].max(1);
        owner[p] = rank;
    }
    owner
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_item_once_in_order_and_differ_by_at_most_one() {
        for world in 1..5 {
            for count in 0..11 {
                let shares: Vec<Range<usize>> = (0..world).map(|r| share(count, r, world)).collect();
                let flat: Vec<usize> = shares.iter().flat_map(Clone::clone).collect();
                assert_eq!(
                    flat,
                    (0..count).collect::<Vec<_>>(),
                    "count {count} world {world}"
                );
                let sizes: Vec<usize> = shares.iter().map(ExactSizeIterator::len).collect();
                assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            }
        }
        assert_eq!(share(5, 0, 2), 0..3);
        assert_eq!(share(5, 1, 2), 3..5);
    }

    #[test]
    fn passes_go_longest_first_to_the_least_loaded_rank() {
        assert_eq!(assign_passes(&[10, 10], 2), vec![0, 1]);
        // 9 → 0, 7 → 1, 5 → 1 (7 < 9), 3 → 0 (9 < 12).
        assert_eq!(assign_passes(&[3, 9, 5, 7], 2), vec![0, 0, 1, 1]);
        assert_eq!(assign_passes(&[4, 4, 4], 1), vec![0, 0, 0]);
        // More ranks than passes: some idle, none gets two.
        assert_eq!(assign_passes(&[1, 2], 4), vec![1, 0]);
    }
}
