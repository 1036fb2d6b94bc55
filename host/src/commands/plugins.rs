//! `crpo-host plugins`: every plugin this run could use, and where it came from.

use crate::plugins::PluginRegistry;

pub fn run(registry: &PluginRegistry) {
    let mut rows: Vec<[String; 5]> = Vec::new();
    for p in registry.rewards() {
        rows.push([
            "reward".into(),
            p.info.name.clone(),
            p.info.version.clone(),
            p.origin.to_string(),
            p.info.description.clone(),
        ]);
    }
    for p in registry.datasets() {
        rows.push([
            "dataset".into(),
            p.info.name.clone(),
            p.info.version.clone(),
            p.origin.to_string(),
            p.info.description.clone(),
        ]);
    }
    rows.sort();
    let header = ["KIND", "NAME", "VERSION", "ORIGIN", "DESCRIPTION"].map(String::from);
    let widths: Vec<usize> = (0..4)
        .map(|c| {
            rows.iter()
                .chain([&header])
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in [&header].into_iter().chain(&rows) {
        println!(
            "{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
    }
}
