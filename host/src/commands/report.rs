//! `crpo-host report RUN_DIR... [--compare RUN...] [--out FILE]`: the run's HTML report.

use anyhow::bail;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ReportArgs {
    /// Run directories (what `train` or `sft` wrote); several are overlaid in each chart.
    pub runs: Vec<PathBuf>,
    /// More runs to overlay (`report A --compare B C` is `report A B C`).
    #[arg(long, num_args = 1.., value_name = "RUN")]
    pub compare: Vec<PathBuf>,
    /// Where to write the HTML (default: report.html in the first run's directory).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let runs: Vec<PathBuf> = args.runs.iter().chain(&args.compare).cloned().collect();
    let Some(first) = runs.first() else {
        bail!("name at least one run directory: crpo-host report RUN_DIR [--compare RUN_DIR...]");
    };
    let out = args.out.clone().unwrap_or_else(|| first.join("report.html"));
    crate::report::write_report(&runs, &out)?;
    println!("report: {}", out.display());
    Ok(())
}
