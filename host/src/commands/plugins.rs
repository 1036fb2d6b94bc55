//! `crpo-host plugins`: every plugin this run could use, and where it came from.

use crate::plugins::PluginRegistry;

pub fn run(registry: &PluginRegistry) {
    let mut rows: Vec<[String; 6]> = Vec::new();
    for p in registry.rewards() {
        let cost = if p.plugin().is_cheap() { "cheap" } else { "slow" };
        rows.push([
            "reward".into(),
            cost.into(),
            p.info.name.clone(),
            p.info.version.clone(),
            p.origin.to_string(),
            p.info.description.clone(),
        ]);
    }
    for p in registry.datasets() {
        rows.push([
            "dataset".into(),
            "-".into(),
            p.info.name.clone(),
            p.info.version.clone(),
            p.origin.to_string(),
            p.info.description.clone(),
        ]);
    }
    for p in registry.policies() {
        rows.push([
            "policy".into(),
            "-".into(),
            p.info.name.clone(),
            p.info.version.clone(),
            p.origin.to_string(),
            p.info.description.clone(),
        ]);
    }
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
