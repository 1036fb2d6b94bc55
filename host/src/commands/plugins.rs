//! `crpo-host plugins`: every plugin this run could use, and where it came from.

use crate::plugins::PluginRegistry;

pub fn run(registry: &PluginRegistry) {
    let row = |kind: &str, cost: &str, info: &crpo_sdk::PluginInfo, origin: &crate::plugins::Origin| {
        [
            kind,
            cost,
            &info.name,
            &info.version,
            &origin.to_string(),
            &info.description,
        ]
        .map(String::from)
    };
    let mut rows: Vec<[String; 6]> = Vec::new();
    for p in registry.rewards() {
        let cost = if p.plugin().is_cheap() { "cheap" } else { "slow" };
        rows.push(row("reward", cost, &p.info, &p.origin));
    }
    rows.extend(
        registry
            .datasets()
            .iter()
            .map(|p| row("dataset", "-", &p.info, &p.origin)),
    );
    rows.extend(
        registry
            .policies()
            .iter()
            .map(|p| row("policy", "-", &p.info, &p.origin)),
    );
    rows.sort();
    let header = ["KIND", "COST", "NAME", "VERSION", "ORIGIN", "DESCRIPTION"].map(String::from);
    print_table(&header, &rows);
}

/// Left-aligned columns, each as wide as its widest cell; the last is not padded.
fn print_table<const N: usize>(header: &[String; N], rows: &[[String; N]]) {
    let widths: Vec<usize> = (0..N)
        .map(|c| {
            rows.iter()
                .chain([header])
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in [header].into_iter().chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, &width))| {
                if c + 1 == N {
                    cell.clone()
                } else {
                    format!("{cell:width$}")
                }
            })
            .collect();
        println!("{}", cells.join("  "));
    }
}
