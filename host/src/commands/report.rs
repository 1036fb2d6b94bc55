//! `crpo-host report RUN_DIR... [--compare RUN...] [--out FILE]`: the run's HTML report.

use anyhow::bail;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct ReportArgs {
    /// Run directories (what `train` or `sft` wrote); several are overlaid in each chart.
    #[arg(value_parser = crate::home_path::path_argument)]
    pub runs: Vec<PathBuf>,
    /// More runs to overlay (`report A --compare B C` is `report A B C`).
    #[arg(long, num_args = 1.., value_name = "RUN", value_parser = crate::home_path::path_argument)]
    pub compare: Vec<PathBuf>,
    /// Where to write the HTML (default: report.html in the first run's directory; `-`:
    /// standard output).
    #[arg(long, value_name = "FILE", value_parser = crate::home_path::path_argument)]
    pub out: Option<PathBuf>,
}

pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let runs: Vec<PathBuf> = args.runs.iter().chain(&args.compare).cloned().collect();
    let Some(first) = runs.first() else {
        bail!("name at least one run directory: crpo-host report RUN_DIR [--compare RUN_DIR...]");
    };
    for run in &runs {
        if !run.exists() {
            bail!(
                "{} does not exist: name a run directory (run.output_dir)",
                run.display()
            );
        }
        if !run.is_dir() {
            bail!(
                "{} is a file: name the run directory that holds it ({})",
                run.display(),
                run.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or_else(|| ".".into(), |p| p.display().to_string())
            );
        }
        if !run.join("metrics.jsonl").exists() && run.join("sft/metrics.jsonl").exists() {
            bail!(
                "{} has no metrics.jsonl of its own: its fine-tuning run is {}",
                run.display(),
                run.join("sft").display()
            );
        }
    }
    super::refuse_naming_twice(&runs, "run directory", "run")?;
    // `-` is standard output, as most tools read it (it wrote a file named `-`).
    let to_stdout = args.out.as_deref() == Some(Path::new("-"));
    let out = match &args.out {
        _ if to_stdout => PathBuf::from("/dev/stdout"),
        Some(out) => out.clone(),
        None => first.join("report.html"),
    };
    // Standard output goes where the shell was told: its file is already open (and truncated).
    if !to_stdout {
        refuse_replacing_other_files(&out)?;
    }
    crate::report::write_report(&runs, &out)?;
    if !to_stdout {
        println!("report: {}", out.display());
    }
    Ok(())
}

/// An earlier report is replaced; anything else at `out` (a run's metrics, a config, a
/// directory) is what a user saved, and is kept. A device or pipe is written through.
fn refuse_replacing_other_files(out: &Path) -> anyhow::Result<()> {
    // The mark is in the document's head: a file that only quotes it further down is not one.
    crate::atomic_file::refuse_replacing_unless(out, "--out", "crpo report", |bytes| {
        crate::report::is_report(&bytes[..bytes.len().min(256)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_named_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::write(run.join("metrics.jsonl"), "").unwrap();
        let args = ReportArgs {
            runs: vec![run.clone()],
            compare: vec![run.join(".")],
            out: Some(dir.path().join("r.html")),
        };
        let error = super::run(&args).unwrap_err().to_string();
        assert!(error.contains("are the same run directory"), "{error}");
        assert!(!dir.path().join("r.html").exists());
    }

    #[test]
    fn only_an_earlier_report_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = dir.path().join("metrics.jsonl");
        std::fs::write(&metrics, "{\"step\":1}\n").unwrap();
        let error = refuse_replacing_other_files(&metrics).unwrap_err().to_string();
        assert!(error.contains("is not an earlier crpo report"), "{error}");
        assert!(refuse_replacing_other_files(dir.path()).is_err());
        let report = dir.path().join("report.html");
        assert!(refuse_replacing_other_files(&report).is_ok(), "not there yet");
        std::fs::write(&report, crate::report::render(&[])).unwrap();
        assert!(refuse_replacing_other_files(&report).is_ok());
        assert!(
            refuse_replacing_other_files(Path::new("/dev/null")).is_ok(),
            "written through"
        );
    }
}
