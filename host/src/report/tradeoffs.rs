//! How objectives move together: correlations of their per-step means and of their
//! per-completion scores within groups, and the flag for one rising while another falls (a
//! reward hacked at another objective's expense, as GRPO dropping System 2 in the demo).

use std::collections::BTreeMap;

/// Pearson's correlation of two equally long series; `None` when either is constant or short.
pub fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len().min(b.len());
    if n < 3 {
        return None;
    }
    let mean = |v: &[f64]| v[..n].iter().sum::<f64>() / n as f64;
    let (ma, mb) = (mean(a), mean(b));
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (da, db) = (a[i] - ma, b[i] - mb);
        cov += da * db;
        va += da * da;
        vb += db * db;
    }
    (va > 1e-12 && vb > 1e-12).then(|| cov / (va * vb).sqrt())
}

/// Pearson's correlation of two objectives' per-step means, paired by step: an objective
/// missing at some steps (added on resume, or not logged) is compared only at the steps both
/// have, never with another step's value.
pub fn pearson_by_step(a: &BTreeMap<u64, f64>, b: &BTreeMap<u64, f64>) -> Option<f64> {
    let (xs, ys): (Vec<f64>, Vec<f64>) = a
        .iter()
        .filter_map(|(step, &x)| b.get(step).map(|&y| (x, y)))
        .unzip();
    pearson(&xs, &ys)
}

/// Scores of completions with the group (step, example) they were sampled in.
pub struct GroupedScores {
    pub group: (u64, String),
    pub scores: BTreeMap<String, f64>,
}

/// Correlation of two objectives' scores within groups: each score minus its group's mean,
/// pooled over groups (what the advantages see).
pub fn within_group(rows: &[GroupedScores], a: &str, b: &str) -> Option<f64> {
    let mut groups: BTreeMap<&(u64, String), Vec<(f64, f64)>> = BTreeMap::new();
    for row in rows {
        if let (Some(&x), Some(&y)) = (row.scores.get(a), row.scores.get(b)) {
            groups.entry(&row.group).or_default().push((x, y));
        }
    }
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for pairs in groups.values().filter(|p| p.len() > 1) {
        let mx = pairs.iter().map(|p| p.0).sum::<f64>() / pairs.len() as f64;
        let my = pairs.iter().map(|p| p.1).sum::<f64>() / pairs.len() as f64;
        for (x, y) in pairs {
            xs.push(x - mx);
            ys.push(y - my);
        }
    }
    pearson(&xs, &ys)
}

/// An objective's mean over the first and the last steps (a tenth of the run, 1 to 10 steps).
pub fn trend(series: &[f64]) -> Option<(f64, f64)> {
    if series.len() < 2 {
        return None;
    }
    let window = (series.len() / 10).clamp(1, 10);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Some((mean(&series[..window]), mean(&series[series.len() - window..])))
}

/// A pair where one objective rose and the other fell by more than `threshold`.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub rising: String,
    pub rose: (f64, f64),
    pub falling: String,
    pub fell: (f64, f64),
}

/// Every objective that fell while another rose, each by more than `threshold`.
pub fn conflicts(series: &BTreeMap<String, Vec<f64>>, threshold: f64) -> Vec<Conflict> {
    let trends: Vec<(&String, (f64, f64))> = series
        .iter()
        .filter_map(|(name, values)| trend(values).map(|t| (name, t)))
        .collect();
    let mut found = Vec::new();
    for (rising, rose) in &trends {
        for (falling, fell) in &trends {
            if rose.1 - rose.0 > threshold && fell.0 - fell.1 > threshold {
                found.push(Conflict {
                    rising: rising.to_string(),
                    rose: *rose,
                    falling: falling.to_string(),
                    fell: *fell,
                });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlations_follow_their_definitions() {
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!((pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-12);
        assert_eq!(pearson(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
        // Within groups: group means differ wildly, but inside each the two agree exactly.
        let row = |step: u64, a: f64, b: f64| GroupedScores {
            group: (step, "q".into()),
            scores: [("a".to_string(), a), ("b".to_string(), b)].into(),
        };
        let rows = [
            row(1, 0.0, 10.0),
            row(1, 1.0, 11.0),
            row(2, 5.0, -3.0),
            row(2, 7.0, -1.0),
        ];
        assert!((within_group(&rows, "a", "b").unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn step_correlations_pair_values_of_the_same_step() {
        let a: BTreeMap<u64, f64> = [(1, 1.0), (2, 5.0), (3, 2.0), (4, 6.0)].into();
        // b is missing at step 2 and equals a at every step it has: by step they agree
        // exactly; by position b's step 3 met a's step 2, and they seemed opposed.
        let b: BTreeMap<u64, f64> = [(1, 1.0), (3, 2.0), (4, 6.0)].into();
        assert!((pearson_by_step(&a, &b).unwrap() - 1.0).abs() < 1e-12);
        let by_position = |m: &BTreeMap<u64, f64>| m.values().copied().collect::<Vec<_>>();
        assert!(pearson(&by_position(&a), &by_position(&b)).unwrap() < 0.0);
        let sparse: BTreeMap<u64, f64> = [(1, 0.0), (9, 1.0)].into();
        assert_eq!(pearson_by_step(&a, &sparse), None, "one step in common");
    }

    #[test]
    fn an_objective_falling_while_another_rises_is_flagged() {
        let mut series = BTreeMap::new();
        series.insert(
            "accuracy".to_string(),
            (0..20).map(|i| 0.4 + 0.03 * i as f64).collect(),
        );
        series.insert(
            "clinical_reasoning".to_string(),
            (0..20).map(|i| 0.65 - 0.03 * i as f64).collect(),
        );
        series.insert("consistency".to_string(), vec![1.0; 20]);
        let found = conflicts(&series, 0.1);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].rising.as_str(), found[0].falling.as_str()),
            ("accuracy", "clinical_reasoning")
        );
        assert!(
            (found[0].rose.0 - 0.415).abs() < 1e-9,
            "the first tenth's mean: {:?}",
            found[0].rose
        );
    }
}
