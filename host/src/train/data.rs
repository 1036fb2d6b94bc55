//! Examples for a run: read through the dataset plugin, split into train and eval, ordered
//! by a seeded shuffle per epoch, and rendered into prompts with the model's chat template.

use super::config::{PromptTruncation, RunConfig};
use crate::plugins::PluginRegistry;
use crate::rollout::tokenizer::{ChatTokenizer, Message};
use anyhow::{bail, Context};
use crpo_sdk::{DatasetSource, Example, Prompt};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Reads one file with the configured reader. A malformed record is an error naming its
/// file, line and field, unless `skip_malformed` (then it is counted and logged).
pub fn read_examples(
    registry: &PluginRegistry,
    config: &RunConfig,
    path: &Path,
) -> anyhow::Result<Vec<Example>> {
    let plugin = registry.dataset(&config.data.dataset)?;
    let source = DatasetSource {
        path: path.to_path_buf(),
        options: serde_json::to_value(&config.data.options)?,
    };
    let read = crate::plugins::dataset_read::read_through(plugin, &source)?;
    if let Some(first) = read.malformed.first() {
        if !config.data.skip_malformed {
            bail!(
                "malformed record {first} ({} malformed in all; set data.skip_malformed = true to skip them)",
                read.malformed.len()
            );
        }
        tracing::warn!(
            "skipped {} malformed records of {} (first: {first})",
            read.malformed.len(),
            path.display()
        );
    }
    if read.examples.is_empty() {
        bail!("{} has no usable examples", path.display());
    }
    Ok(read.examples)
}

/// The train and eval examples of a run.
pub struct Splits {
    pub train: Vec<Example>,
    pub eval: Vec<Example>,
}

pub fn load_splits(registry: &PluginRegistry, config: &RunConfig) -> anyhow::Result<Splits> {
    let mut train = read_examples(registry, config, &config.data.path)?;
    let eval = match &config.data.eval_path {
        Some(path) => read_examples(registry, config, path)?,
        None => {
            // A fixed held-out set: seeded by the run seed, independent of the epoch order.
            train.shuffle(&mut ChaCha8Rng::seed_from_u64(config.run.seed ^ 0x5eed_e7a1));
            let held_out = (train.len() as f64 * config.data.eval_fraction).round() as usize;
            if held_out >= train.len() {
                bail!(
                    "data.eval_fraction = {} holds out all {} examples of {}: none is left to train on",
                    config.data.eval_fraction,
                    train.len(),
                    config.data.path.display()
                );
            }
            if held_out == 0 && config.data.eval_fraction > 0.0 {
                tracing::warn!(
                    "data.eval_fraction = {} of {} examples rounds to none held out: there is no held-out set (raise it, or set data.eval_path)",
                    config.data.eval_fraction,
                    train.len()
                );
            }
            if held_out > 0 {
                // TRL trains on the whole file: say what is kept out, and how not to.
                tracing::info!(
                    "{held_out} of the {} examples of {} are held out as the evaluation set (data.eval_fraction = {}, seeded; what `crpo-host eval --config` scores): {} to train on; data.eval_fraction = 0 trains on all",
                    train.len(),
                    config.data.path.display(),
                    config.data.eval_fraction,
                    train.len() - held_out
                );
            }
            train.split_off(train.len() - held_out)
        }
    };
    warn_of_shared_questions(&train, &eval);
    Ok(Splits { train, eval })
}

/// Held-out questions that are also training questions (a duplicated record, `eval_path` the
/// same data as `path`) measure memory, not learning: said once, with how many.
fn warn_of_shared_questions(train: &[Example], eval: &[Example]) {
    let key = |e: &Example| serde_json::to_string(&e.prompt).unwrap_or_default();
    let trained: std::collections::HashSet<String> = train.iter().map(key).collect();
    let shared = eval.iter().filter(|e| trained.contains(&key(e))).count();
    if shared > 0 {
        tracing::warn!(
            "{shared} of the {} held-out questions are also training questions (the same prompt): held-out scores over them measure memory (deduplicate the data, or set data.eval_path to other questions)",
            eval.len()
        );
    }
}

/// Where the run is in its data: epoch and index into that epoch's order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCursor {
    pub epoch: u64,
    pub index: usize,
}

/// The order of epoch `epoch`: a permutation seeded by the run seed and the epoch.
pub fn epoch_order(len: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(
            seed.wrapping_add(epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        ));
    }
    order
}

/// Takes the next `count` example indices, starting a new epoch when one runs out.
pub fn next_indices(
    cursor: &mut DataCursor,
    len: usize,
    count: usize,
    seed: u64,
    shuffle: bool,
) -> Vec<usize> {
    let mut taken = Vec::with_capacity(count);
    let mut order = epoch_order(len, seed, cursor.epoch, shuffle);
    while taken.len() < count {
        if cursor.index >= len {
            cursor.epoch += 1;
            cursor.index = 0;
            order = epoch_order(len, seed, cursor.epoch, shuffle);
        }
        taken.push(order[cursor.index]);
        cursor.index += 1;
    }
    taken
}

/// The user message for an example: the template with `{question}` and `{options}`. Without
/// options (a free-text question) the blank lines the template kept for them are dropped.
pub fn user_message(example: &Example, template: &str) -> String {
    let options: Vec<String> = example
        .options
        .iter()
        .map(|o| format!("{}. {}", o.key, o.text))
        .collect();
    let message = template
        .replace("{question}", example.prompt.question())
        .replace("{options}", &options.join("\n"));
    if options.is_empty() {
        message.trim_end().to_string()
    } else {
        message
    }
}

/// The chat messages an example is asked with.
pub fn messages(example: &Example, template: &str, system: Option<&str>) -> Vec<Message> {
    let mut messages = Vec::new();
    match &example.prompt {
        Prompt::Messages(given) => {
            if let Some(system) = system.filter(|_| !given.iter().any(|m| m.role == "system")) {
                messages.push(Message::new("system", system));
            }
            messages.extend(given.iter().map(|m| Message::new(&m.role, &m.content)));
        }
        Prompt::Text(_) => {
            if let Some(system) = system {
                messages.push(Message::new("system", system));
            }
            messages.push(Message::new("user", &user_message(example, template)));
        }
    }
    messages
}

/// How examples become prompts for a run.
pub struct PromptFormat {
    pub template: String,
    pub system: Option<String>,
    pub max_tokens: usize,
    pub truncation: PromptTruncation,
}

/// More characters than any token of a real vocabulary spans: a user content longer than
/// `max_prompt_length` times this cannot fit, whatever the tokenizer.
const MAX_CHARS_PER_TOKEN: usize = 256;

/// A prompt as the model sees it: the text (after any truncation) and its ids.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedPrompt {
    pub text: String,
    pub ids: Vec<i64>,
    /// The user's content was cut to fit `max_prompt_length`.
    pub truncated: bool,
}

/// A prompt's full length in tokens, before any cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptLength {
    Exact(usize),
    /// A user content too long to tokenize whole: at least this many tokens.
    AtLeast(usize),
}

impl PromptLength {
    pub fn tokens(self) -> usize {
        match self {
            PromptLength::Exact(n) | PromptLength::AtLeast(n) => n,
        }
    }
}

/// An example's full prompt length, and what a run would ask (or why it would refuse it).
pub struct MeasuredPrompt {
    pub length: PromptLength,
    pub rendered: anyhow::Result<Option<RenderedPrompt>>,
}

impl PromptFormat {
    pub fn from_config(config: &RunConfig, registry: &PluginRegistry) -> anyhow::Result<Self> {
        Ok(PromptFormat {
            template: config.data.prompt_template.clone(),
            system: config.system_prompt(registry)?,
            max_tokens: config.max_prompt_length(),
            truncation: config.data.prompt_truncation,
        })
    }

    /// The example's prompt within `max_tokens`: over it, `left` cuts the start of the last
    /// user message's content (the chat template and system prompt are kept whole), `skip`
    /// gives `None` and `error` fails naming the example.
    pub fn render(
        &self,
        tokenizer: &ChatTokenizer,
        example: &Example,
    ) -> anyhow::Result<Option<RenderedPrompt>> {
        self.measure(tokenizer, example)?.rendered
    }

    /// The example's full prompt length and its rendering (as [`Self::render`]), from one
    /// tokenization where the prompt fits. The outer error is the tokenizer's; the rendering's
    /// error says why a run would refuse the example.
    pub fn measure(&self, tokenizer: &ChatTokenizer, example: &Example) -> anyhow::Result<MeasuredPrompt> {
        let mut chat = messages(example, &self.template, self.system.as_deref());
        // A user content far longer than any prompt that fits is cut (or skipped, or refused)
        // before it is tokenized: the tokenizer takes ~230 bytes a character, and a 20 MB
        // record took 4.5 GB. Its length is then known only from below.
        let mut precut = None;
        if let Some(user) = chat.iter().rposition(|m| m.role == "user") {
            let bound = self.max_tokens.saturating_mul(MAX_CHARS_PER_TOKEN);
            let chars = chat[user].content.chars().count();
            if chars > bound {
                let length = PromptLength::AtLeast(chars.div_ceil(MAX_CHARS_PER_TOKEN));
                match self.truncation {
                    PromptTruncation::Skip => return Ok(MeasuredPrompt { length, rendered: Ok(None) }),
                    PromptTruncation::Error => {
                        return Ok(MeasuredPrompt {
                            length,
                            rendered: Err(anyhow::anyhow!(
                                "example `{}`: its user content is {chars} characters, far over algorithm.max_prompt_length = {} tokens (set data.prompt_truncation = \"left\" or \"skip\", or raise the limit)",
                                example.id,
                                self.max_tokens
                            )),
                        })
                    }
                    PromptTruncation::Left => {
                        chat[user].content = chat[user].content.chars().skip(chars - bound).collect();
                        precut = Some(length);
                    }
                }
            }
        }
        let length = match self
            .fitting(tokenizer, &chat, precut.is_some())
            .map_err(|error| self.named(error, example))?
        {
            Ok(prompt) => {
                return Ok(MeasuredPrompt {
                    length: precut.unwrap_or(PromptLength::Exact(prompt.ids.len())),
                    rendered: Ok(Some(prompt)),
                })
            }
            Err(length) => length,
        };
        let measured = |rendered| MeasuredPrompt {
            length: precut.unwrap_or(PromptLength::Exact(length)),
            rendered,
        };
        Ok(match self.truncation {
            PromptTruncation::Skip => measured(Ok(None)),
            PromptTruncation::Error => measured(Err(anyhow::anyhow!(
                "example `{}`: its prompt is {length} tokens, over algorithm.max_prompt_length = {} (set data.prompt_truncation = \"left\" or \"skip\", or raise the limit)",
                example.id,
                self.max_tokens
            ))),
            PromptTruncation::Left => measured(self.cut_to_fit(tokenizer, example, chat, length)),
        })
    }

    /// A rendering error with the example it came from, and where crpo added a system turn
    /// (a template may refuse one: Gemma's), how to leave it out.
    fn named(&self, error: anyhow::Error, example: &Example) -> anyhow::Error {
        let added_system = self.system.is_some()
            && !matches!(&example.prompt, Prompt::Messages(given) if given.iter().any(|m| m.role == "system"));
        let hint = if added_system {
            " (crpo adds a system turn: data.system_prompt, or the reward preset's; data.system_prompt = \"\" leaves it out)"
        } else {
            ""
        };
        anyhow::anyhow!("example `{}`: {error:#}{hint}", example.id)
    }

    /// `chat` (of `length` tokens, over `max_tokens`) with the start of its last user
    /// message's content cut until it fits.
    fn cut_to_fit(
        &self,
        tokenizer: &ChatTokenizer,
        example: &Example,
        mut chat: Vec<Message>,
        length: usize,
    ) -> anyhow::Result<Option<RenderedPrompt>> {
        let user = chat.iter().rposition(|m| m.role == "user").with_context(|| {
            format!(
                "example `{}`: a prompt over algorithm.max_prompt_length has no user message to cut",
                example.id
            )
        })?;
        let content = tokenizer.encode(&chat[user].content)?;
        // Re-tokenising the cut text can merge differently at the cut: drop more until it fits.
        let mut cut = length - self.max_tokens;
        loop {
            if cut >= content.len() {
                bail!(
                    "example `{}`: the chat template and system prompt alone are over algorithm.max_prompt_length = {} tokens",
                    example.id,
                    self.max_tokens
                );
            }
            chat[user].content = tokenizer.decode(&content[cut..])?;
            match self.fitting(tokenizer, &chat, true)? {
                Ok(prompt) => return Ok(Some(prompt)),
                Err(length) => cut += length - self.max_tokens,
            }
        }
    }

    /// The rendered chat if it fits in `max_tokens`, else its length in tokens.
    fn fitting(
        &self,
        tokenizer: &ChatTokenizer,
        chat: &[Message],
        truncated: bool,
    ) -> anyhow::Result<Result<RenderedPrompt, usize>> {
        let text = tokenizer.render_prompt(chat)?;
        let ids = tokenizer.encode(&text)?;
        Ok(if ids.len() <= self.max_tokens {
            Ok(RenderedPrompt { text, ids, truncated })
        } else {
            Err(ids.len())
        })
    }

    /// The examples whose prompts this format admits (all but the skipped ones, which are
    /// counted in one warning); `error` fails at the first prompt over the limit.
    pub fn admit(
        &self,
        tokenizer: &ChatTokenizer,
        examples: Vec<Example>,
        what: &str,
    ) -> anyhow::Result<Vec<Example>> {
        let total = examples.len();
        let (mut kept, mut truncated) = (Vec::with_capacity(total), 0usize);
        for example in examples {
            let rendered = self
                .render(tokenizer, &example)
                .with_context(|| format!("the {what} examples"))?;
            if let Some(prompt) = rendered {
                truncated += usize::from(prompt.truncated);
                kept.push(example);
            }
        }
        let skipped = total - kept.len();
        if truncated > 0 {
            tracing::warn!(
                "{truncated} of {total} {what} prompts are over algorithm.max_prompt_length = {} tokens: the start of their user content is cut (data.prompt_truncation)",
                self.max_tokens
            );
        }
        if skipped > 0 {
            tracing::warn!(
                "{skipped} of {total} {what} prompts are over algorithm.max_prompt_length = {} tokens and are skipped (data.prompt_truncation = \"skip\")",
                self.max_tokens
            );
        }
        if kept.is_empty() {
            bail!(
                "every {what} prompt is over algorithm.max_prompt_length = {} tokens",
                self.max_tokens
            );
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crpo_sdk::AnswerOption;

    #[test]
    fn epochs_visit_every_example_once_in_a_seeded_order() {
        let mut cursor = DataCursor::default();
        let first: Vec<usize> = next_indices(&mut cursor, 5, 5, 7, true);
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
        assert_eq!(cursor, DataCursor { epoch: 0, index: 5 });
        let next = next_indices(&mut cursor, 5, 2, 7, true);
        assert_eq!(cursor, DataCursor { epoch: 1, index: 2 });
        assert_eq!(next, epoch_order(5, 7, 1, true)[..2]);
        assert_eq!(epoch_order(4, 1, 0, false), vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_resumed_cursor_continues_the_same_sequence() {
        let mut straight = DataCursor::default();
        let all = next_indices(&mut straight, 7, 12, 3, true);
        let mut resumed = DataCursor::default();
        let mut parts = next_indices(&mut resumed, 7, 5, 3, true);
        let saved = resumed;
        let mut again = saved;
        parts.extend(next_indices(&mut again, 7, 7, 3, true));
        assert_eq!(all, parts);
    }

    /// A template that refuses a system turn (Gemma's) names the example and, where crpo
    /// added the turn, how to leave it out; `data.system_prompt = ""` does.
    #[test]
    fn a_template_refusing_the_system_turn_crpo_adds_says_how_to_leave_it_out() {
        let dir = tempfile::tempdir().unwrap();
        crpo_plugins_policy::presets::write_tiny(dir.path(), 0).unwrap();
        let _ = std::fs::remove_file(dir.path().join("chat_template.jinja"));
        let path = dir.path().join("tokenizer_config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        config["chat_template"] = "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{{ m.content }}{% endfor %}".into();
        std::fs::write(&path, config.to_string()).unwrap();
        let tokenizer = ChatTokenizer::from_dir(dir.path()).unwrap();
        let example = Example {
            id: "q1".into(),
            prompt: Prompt::Text("Which drug?".into()),
            ..Example::default()
        };
        let format = |system: Option<&str>| PromptFormat {
            template: "{question}".into(),
            system: system.map(String::from),
            max_tokens: 512,
            truncation: PromptTruncation::Left,
        };
        let error = format(Some("Be brief."))
            .render(&tokenizer, &example)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("example `q1`")
                && error.contains("System role not supported")
                && error.contains("data.system_prompt = \"\""),
            "{error}"
        );
        assert!(format(None).render(&tokenizer, &example).unwrap().is_some());
    }

    #[test]
    fn the_user_message_lists_the_options() {
        let example = Example {
            prompt: Prompt::Text("Which drug?".into()),
            options: vec![
                AnswerOption {
                    key: "A".into(),
                    text: "Aspirin".into(),
                },
                AnswerOption {
                    key: "B".into(),
                    text: "Heparin".into(),
                },
            ],
            ..Example::default()
        };
        assert_eq!(
            user_message(&example, "{question}\n\n{options}"),
            "Which drug?\n\nA. Aspirin\nB. Heparin"
        );
        let free = Example {
            options: Vec::new(),
            ..example.clone()
        };
        assert_eq!(user_message(&free, "{question}\n\n{options}"), "Which drug?");
        let with_system = messages(&example, "{question}", Some("Be brief."));
        assert_eq!(with_system[0].role, "system");
        assert_eq!(with_system[1].content, "Which drug?");
    }
}
