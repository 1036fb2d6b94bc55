//! What a step leaves behind: sampled completions, held-out evaluations and checkpoints.

use super::{Trainer, MODE};
use crate::train::checkpoint::{self, TrainerState};
use crate::train::eval::evaluate_with;
use crate::train::metrics::EvalPoint;
use crate::train::rollouts::Rollouts;
use anyhow::bail;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

impl Trainer {
    /// The first `sample_count` completions of the step with their scores, diagnostics,
    /// answer and gold answer, reward and advantage.
    pub(super) fn write_samples(&mut self, rollouts: &Rollouts, advantages: &[f32]) -> anyhow::Result<()> {
        let names = self.reward.names();
        let step = self.step;
        let Some(writers) = &mut self.writers else {
            return Ok(());
        };
        let header: Vec<String> = names.iter().map(|name| markdown_cell(name)).collect();
        let mut table = format!(
            "| completion | gold | answer | reward | advantage | {} |\n|---|---|---|---|---|{}\n",
            header.join(" | "),
            "---|".repeat(names.len())
        );
        for (index, (group, i)) in rollouts.rows().enumerate().take(self.config.run.sample_count) {
            let example = &self.splits.train[group.example];
            let scores: Map<String, Value> = names
                .iter()
                .zip(&group.scores.values[i])
                .map(|(name, value)| (name.clone(), json!(value)))
                .collect();
            let diagnostics: Map<String, Value> = group.scores.diagnostics[i]
                .iter()
                .map(|(name, value)| (name.clone(), json!(value)))
                .collect();
            writers.samples.append(&json!({
                "step": step,
                // The whole example, so `crpo-host score --input samples.jsonl` can score it again.
                "example": example,
                "prompt": group.prompt_text,
                "completion": group.texts[i],
                // What completion_length counts (the EOS included) and truncated_fraction,
                // which the decoded text cannot give back.
                "completion_tokens": group.completions[i].len(),
                "truncated": !group.finished[i],
                "gold": example.answer,
                "answer": group.scores.answers[i],
                "scores": scores,
                "diagnostics": diagnostics,
                "reward": group.scores.totals[i],
                "advantage": advantages[index],
            }))?;
            table.push_str(&format!(
                "| {} | {} | {} | {:.3} | {:.3} | {} |\n",
                markdown_cell(&group.texts[i]),
                markdown_cell(example.answer.as_deref().unwrap_or("-")),
                markdown_cell(group.scores.answers[i].as_deref().unwrap_or("-")),
                group.scores.totals[i],
                advantages[index],
                group.scores.values[i]
                    .iter()
                    .map(|v| format!("{v:.3}"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
        }
        writers.events.text(step, "samples", &table)
    }

    /// The held-out set in each of `run.eval_decodings`, as `crpo-host eval` would score it now.
    pub(super) fn evaluate_held_out(&self) -> anyhow::Result<BTreeMap<String, EvalPoint>> {
        if self.splits.eval.is_empty() {
            bail!(
                "run.eval_steps is set but there is no held-out set (data.eval_path or data.eval_fraction)"
            );
        }
        let mut points = BTreeMap::new();
        for decoding in &self.config.run.eval_decodings {
            let report = evaluate_with(
                &self.policy,
                &self.reward,
                &self.format,
                &self.config,
                &decoding.settings(&self.config.eval),
                &self.splits.eval,
                "held-out",
                None,
                self.world.as_ref(),
            )?;
            tracing::info!(
                "step {}: held-out accuracy ({}) {:.3} on {} questions, reward {:.3}",
                self.step,
                decoding.name(),
                report.accuracy,
                report.questions,
                report.reward
            );
            points.insert(
                decoding.name().to_string(),
                EvalPoint {
                    questions: report.questions,
                    accuracy: report.accuracy,
                    reward: report.reward,
                    objectives: report.objectives,
                },
            );
        }
        Ok(points)
    }

    pub(super) fn save_checkpoint(&self) -> anyhow::Result<PathBuf> {
        let state = TrainerState {
            step: self.step,
            optimizer_updates: self.optimizer.steps,
            cursor: self.cursor,
            seed: self.config.run.seed,
            mode: MODE.into(),
            nonfinite_steps: self.nonfinite_steps,
            world_size: self.world.as_ref().map_or(1, |w| w.size),
            inputs: Some(self.inputs.clone()),
        };
        let path = checkpoint::save(
            &self.config.run.output_dir,
            &state,
            &self.config_toml,
            self.config.run.save_total_limit,
            |dir| {
                self.policy.save(&dir.join(checkpoint::MODEL_DIR))?;
                self.optimizer.save(&dir.join(checkpoint::OPTIMIZER_FILE))
            },
        )?;
        tracing::info!("checkpoint {}", path.display());
        Ok(path)
    }
}

/// `text` as a cell of TensorBoard's markdown table, shown as written: markdown's marks
/// escaped (`2*3*4` lost its stars to italics), HTML as entities (a completion's `</table>`
/// ended the table), line ends as `<br>`.
fn markdown_cell(text: &str) -> String {
    let mut cell = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => cell.push_str("&amp;"),
            '<' => cell.push_str("&lt;"),
            '>' => cell.push_str("&gt;"),
            '\n' => cell.push_str("<br>"),
            '\r' => {}
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '~' => {
                cell.push('\\');
                cell.push(c);
            }
            _ => cell.push(c),
        }
    }
    cell
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cell_shows_its_text_as_written() {
        assert_eq!(super::markdown_cell("2*3*4 \\| a_b"), "2\\*3\\*4 \\\\\\| a\\_b");
        assert_eq!(
            super::markdown_cell("</td></table>\n<h1>X"),
            "&lt;/td&gt;&lt;/table&gt;<br>&lt;h1&gt;X"
        );
    }
}
