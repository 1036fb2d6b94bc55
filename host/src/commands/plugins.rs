//! `crpo-host plugins`: every plugin this run could use, and where it came from.

use crate::plugins::{loader, trust, PluginLoadError, PluginRegistry};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct PluginsArgs {
    /// Print each library's sha256 and a `[[run.plugin_pins]]` entry for it, without loading
    /// any (so nothing of theirs runs).
    #[arg(long)]
    pub verify: bool,
}

pub fn run(dirs: &[PathBuf], args: &PluginsArgs) -> anyhow::Result<()> {
    if args.verify {
        return verify(dirs);
    }
    let (registry, problems) = PluginRegistry::load_what_loads(dirs);
    list(&registry);
    if !problems.is_empty() {
        return Err(DidNotLoad(problems).into());
    }
    Ok(())
}

/// What kept plugins out of the listing.
#[derive(Debug)]
pub struct DidNotLoad(pub Vec<PluginLoadError>);

impl std::fmt::Display for DidNotLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} plugin library(ies) or directory(ies) did not load, and a run naming them would stop:",
            self.0.len()
        )?;
        self.0.iter().try_for_each(|problem| write!(f, "\n  {problem}"))
    }
}

impl std::error::Error for DidNotLoad {}

/// The pins of every library in `dirs`: what a config names to trust exactly these files.
fn verify(dirs: &[PathBuf]) -> anyhow::Result<()> {
    let mut any = false;
    for dir in trust::distinct_dirs(dirs) {
        for library in loader::library_files(&dir)? {
            let sha256 = trust::sha256_of(&library)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", library.display()))?;
            let file = library.file_name().unwrap_or_default().to_string_lossy();
            println!(
                "# {}
[[run.plugin_pins]]
file = \"{file}\"
sha256 = \"{sha256}\"
",
                library.display()
            );
            any = true;
        }
    }
    if !any {
        println!("no plugin libraries in the plugin directories (--plugins, CRPO_PLUGIN_PATH)");
    }
    Ok(())
}

fn list(registry: &PluginRegistry) {
    let row = |kind: &str, cost: &str, info: &crpo_sdk::PluginInfo, origin: &crate::plugins::Origin| {
        let sdk = match origin {
            crate::plugins::Origin::Builtin => crpo_sdk::SDK_VERSION,
            crate::plugins::Origin::Library { sdk, .. } => sdk,
        };
        // What a library says of itself is shown, never sent to the terminal as controls.
        [
            kind,
            cost,
            &info.name,
            &info.version,
            sdk,
            &origin.to_string(),
            &info.description,
        ]
        .map(crate::control_chars::visible)
    };
    let mut rows: Vec<[String; 7]> = Vec::new();
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
    // SDK: the crpo-sdk version the plugin was built against (a built-in's is the host's).
    let header = ["KIND", "COST", "NAME", "VERSION", "SDK", "ORIGIN", "DESCRIPTION"].map(String::from);
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
