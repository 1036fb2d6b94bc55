//! `crpo-host demo-data`: writes the demo task (`train.jsonl`, `eval.jsonl`, MedQA format)
//! with its knobs on the command line; the defaults give the bundled `data/demo`.

use crate::atomic_file;
use crate::demo_task::{self as demo, Ask, DemoTask, StyleWeights};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// The demo task's knobs (shared by `demo-data` and `demo`).
#[derive(clap::Args, Clone)]
pub struct DemoTaskArgs {
    /// Training questions.
    #[arg(long, default_value_t = DemoTask::default().train)]
    pub train_questions: usize,
    /// Held-out questions.
    #[arg(long, default_value_t = DemoTask::default().eval)]
    pub eval_questions: usize,
    /// Share of the questions that are about a hard condition.
    #[arg(long, default_value_t = DemoTask::default().hard_share)]
    pub hard_share: f64,
    /// Share of a hard condition's reference completions that name the diagnosis it is
    /// confused with (the imperfect teacher).
    #[arg(long, default_value_t = DemoTask::default().wrong_share)]
    pub wrong_share: f64,
    /// Relative frequency of the reference reasoning styles.
    #[arg(long, default_value = "careful=0.4,shortcut=0.3,hedging=0.3")]
    pub styles: String,
    /// What the questions ask for: diagnosis, test, treatment (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "diagnosis,test,treatment")]
    pub kinds: Vec<String>,
}

impl DemoTaskArgs {
    pub fn task(&self, seed: u64) -> anyhow::Result<DemoTask> {
        let styles = StyleWeights::parse(&self.styles).map_err(|e| anyhow::anyhow!("--styles: {e}"))?;
        let kinds = self
            .kinds
            .iter()
            .map(|k| {
                Ask::from_label(k.trim())
                    .with_context(|| format!("--kinds: `{k}` is not diagnosis, test or treatment"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let task = DemoTask {
            seed,
            train: self.train_questions,
            eval: self.eval_questions,
            hard_share: self.hard_share,
            wrong_share: self.wrong_share,
            styles,
            kinds,
        };
        task.validate().map_err(anyhow::Error::msg)?;
        Ok(task)
    }
}

#[derive(clap::Args)]
pub struct DemoDataArgs {
    /// Directory to write train.jsonl and eval.jsonl to.
    #[arg(long, value_parser = crate::home_path::path_argument)]
    pub out: PathBuf,
    /// Seeds every draw of the task.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace train.jsonl and eval.jsonl if --out already has them.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub task: DemoTaskArgs,
}

pub fn run(args: &DemoDataArgs) -> anyhow::Result<()> {
    let task = args.task.task(args.seed)?;
    for path in write_task(&task, &args.out, args.overwrite)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Writes the task's two files into `dir`; refuses to replace existing ones unless `overwrite`.
pub fn write_task(task: &DemoTask, dir: &Path, overwrite: bool) -> anyhow::Result<Vec<PathBuf>> {
    let files = task.generate().map_err(anyhow::Error::msg)?;
    let outputs = [
        (dir.join(demo::TRAIN_FILE), &files.train),
        (dir.join(demo::EVAL_FILE), &files.eval),
    ];
    if !overwrite {
        if let Some((existing, _)) = outputs.iter().find(|(path, _)| path.exists()) {
            bail!(
                "{} already exists: pass --overwrite to replace it, or choose another --out",
                existing.display()
            );
        }
    }
    let created = !dir.exists();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Both or neither: a new train.jsonl beside an old eval.jsonl is a held-out set of
    // another task.
    let texts: Vec<String> = outputs
        .iter()
        .map(|(_, records)| demo::to_jsonl(records))
        .collect();
    let files: Vec<(&Path, &[u8])> = outputs
        .iter()
        .zip(&texts)
        .map(|((path, _), text)| (path.as_path(), text.as_bytes()))
        .collect();
    if let Err(error) = atomic_file::write_together(&files) {
        if created {
            // Only when empty: nothing of the user's is in a directory this call made.
            let _ = std::fs::remove_dir(dir);
        }
        return Err(error);
    }
    Ok(outputs.into_iter().map(|(path, _)| path).collect())
}
