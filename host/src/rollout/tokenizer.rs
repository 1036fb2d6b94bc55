//! The tokenizer and chat template of a Hugging Face model directory.
//!
//! `tokenizer.json` is read with the tokenizers crate. The chat template comes from
//! `chat_template.jinja` (transformers 5) or `tokenizer_config.json`'s `chat_template`, and is
//! rendered with minijinja as transformers renders it (trim_blocks, lstrip_blocks, Python
//! string methods, `raise_exception`, `strftime_now`, the special tokens); a list of named
//! templates gives the one named "default"; a model without one gets ChatML. EOS ids are the union of
//! `generation_config.json`, `config.json` and the tokenizer config's `eos_token`.

use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;
use tokenizers::Tokenizer;

/// Tokenizer and generation files of a model directory: the host reads them and writes them
/// beside every model it saves (the policy plugin writes config and weights).
pub const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
    "special_tokens_map.json",
];

/// ChatML, as Qwen models use, for models that ship no template.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

#[derive(Debug, Clone)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Message {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

pub struct ChatTokenizer {
    tokenizer: Tokenizer,
    /// The chat template, parsed once, as `CHAT_TEMPLATE` in an environment set up as
    /// transformers renders templates; or why it does not parse, said when a chat is rendered
    /// (as transformers, raw text still encodes).
    templates: std::result::Result<minijinja::Environment<'static>, String>,
    /// Where the template came from, for its errors ("M/tokenizer_config.json's chat_template").
    template_source: String,
    /// Said at the first chat rendered, when the model ships no template (ChatML is used).
    default_template: Option<String>,
    /// `bos_token`, `eos_token`, `pad_token`, … as tokenizer_config.json sets them.
    special_tokens: std::collections::BTreeMap<String, String>,
    eos_ids: Vec<u32>,
    pad_id: u32,
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("{} is not valid JSON", path.display()))
}

/// A special token as tokenizer_config.json writes it: a string or `{"content": …}`.
fn token_string(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
        _ => None,
    }
}

/// `eos_token_id` as transformers reads it: an id, a list of ids, or null (none). An entry
/// that is no id (`"abc"`, `-1`) is left out with a warning naming `file`, as transformers
/// warns; with no EOS left at all the tokenizer is refused (completions would run to their
/// budget).
fn ids(value: Option<&serde_json::Value>, file: &Path) -> Vec<u32> {
    use serde_json::Value;
    let entries: Vec<&Value> = match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list.iter().collect(),
        Some(one) => vec![one],
    };
    entries
        .into_iter()
        .filter_map(|entry| {
            let id = entry.as_u64().and_then(|id| u32::try_from(id).ok());
            if id.is_none() {
                tracing::warn!(
                    "{}: eos_token_id holds {entry}, which is no token id (a whole number ≥ 0): left out",
                    file.display()
                );
            }
            id
        })
        .collect()
}

/// The special tokens transformers passes to a chat template (its `special_tokens_map`).
const SPECIAL_TOKENS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "pad_token",
    "sep_token",
    "cls_token",
    "mask_token",
];

/// The warning for a model without a chat template: louder when ChatML's markers are not
/// tokens of its tokenizer (a base Llama's), for the model then reads them as plain text.
fn default_template_warning(dir: &Path, tokenizer: &Tokenizer) -> String {
    let missing: Vec<&str> = ["<|im_start|>", "<|im_end|>"]
        .into_iter()
        .filter(|marker| tokenizer.token_to_id(marker).is_none())
        .collect();
    let lacking = format!(
        "{} has no chat template (chat_template.jinja or tokenizer_config.json's chat_template)",
        dir.display()
    );
    if missing.is_empty() {
        format!("{lacking}: prompts are written in ChatML, as Qwen's")
    } else {
        format!(
            "{lacking}, so prompts are written in ChatML, but {} {} of its tokenizer: the model reads ChatML's markers as plain text; give the model the chat template it was trained with (chat_template.jinja)",
            missing.join(" and "),
            if missing.len() > 1 { "are no tokens" } else { "is no token" }
        )
    }
}

/// tokenizer_config.json's `chat_template`: a string, or transformers' named templates
/// (`[{"name": …, "template": …}]`), of which a chat uses the one named "default".
fn config_template(value: Option<&serde_json::Value>, file: &Path) -> Result<Option<String>> {
    let named = match value {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::String(text)) => return Ok(Some(text.clone())),
        Some(serde_json::Value::Array(named)) => named,
        Some(other) => {
            return Err(anyhow!(
                "{}: `chat_template` is {other}: expected a string or a list of {{\"name\", \"template\"}}",
                file.display()
            ))
        }
    };
    let template = |name: &str| {
        named.iter().find_map(|entry| {
            (entry.get("name")?.as_str()? == name)
                .then(|| entry.get("template")?.as_str().map(String::from))?
        })
    };
    match template("default") {
        Some(text) => Ok(Some(text)),
        None => Err(anyhow!(
            "{}: `chat_template` lists named templates ({}) and none named \"default\", the one a chat uses (as transformers): name one \"default\"",
            file.display(),
            named
                .iter()
                .filter_map(|entry| entry.get("name")?.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The name of the chat template in `ChatTokenizer::templates`.
const CHAT_TEMPLATE: &str = "chat_template";

/// An environment holding `template`, with transformers' rendering settings and functions:
/// trim_blocks, lstrip_blocks, Python's string methods, `raise_exception`, `strftime_now`.
/// The most work (minijinja's instructions) one render of a chat template may take.
const TEMPLATE_FUEL: u64 = 10_000_000;

fn template_environment(
    template: String,
) -> std::result::Result<minijinja::Environment<'static>, minijinja::Error> {
    let mut env = minijinja::Environment::new();
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()?;
    env.set_syntax(syntax);
    // A chat template is code from the model's files: nested loops rendered gigabytes. A real
    // template spends hundreds of steps on a prompt.
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("strftime_now", strftime_now);
    env.add_function(
        "raise_exception",
        |message: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                message,
            ))
        },
    );
    env.add_filter("tojson", tojson);
    env.add_template_owned(CHAT_TEMPLATE, without_generation_tags(&template))?;
    Ok(env)
}

/// transformers' `{% generation %}…{% endgeneration %}` marks the assistant's text for
/// assistant-only losses and renders its body as it is: an `if` that always holds, keeping
/// the tags' whitespace control.
fn without_generation_tags(template: &str) -> String {
    static TAG: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"\{%(-|\+)?\s*(end)?generation\s*(-|\+)?%\}").unwrap()
    });
    TAG.replace_all(template, |tag: &regex::Captures| {
        let (open, close) = (
            tag.get(1).map_or("", |m| m.as_str()),
            tag.get(3).map_or("", |m| m.as_str()),
        );
        let statement = if tag.get(2).is_some() { "endif" } else { "if true" };
        format!("{{%{open} {statement} {close}%}}")
    })
    .into_owned()
}

/// transformers' `tojson`: Python's `json.dumps` — keys in their order, `<`, `>`, `&` and `'`
/// as they are (minijinja's own escapes them for HTML), `indent` and `sort_keys` as Python's.
fn tojson(
    value: minijinja::Value,
    indent: Option<minijinja::Value>,
    kwargs: minijinja::value::Kwargs,
) -> std::result::Result<minijinja::Value, minijinja::Error> {
    let invalid = |why: String| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, why);
    let indent = match indent.or(kwargs.get::<Option<minijinja::Value>>("indent")?) {
        Some(indent) if !indent.is_none() => Some(usize::try_from(indent)?),
        _ => None,
    };
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let _ = kwargs.get::<Option<minijinja::Value>>("separators")?;
    kwargs.assert_all_used()?;
    let mut json = serde_json::to_value(&value).map_err(|e| invalid(format!("tojson: {e}")))?;
    if sort_keys {
        json.sort_all_objects();
    }
    let mut out = Vec::new();
    let written = match indent {
        Some(width) => {
            let spaces = " ".repeat(width);
            let formatter = serde_json::ser::PrettyFormatter::with_indent(spaces.as_bytes());
            serde::Serialize::serialize(
                &json,
                &mut serde_json::Serializer::with_formatter(&mut out, formatter),
            )
        }
        None => serde::Serialize::serialize(
            &json,
            &mut serde_json::Serializer::with_formatter(&mut out, PythonSeparators),
        ),
    };
    written.map_err(|e| invalid(format!("tojson: {e}")))?;
    let text = String::from_utf8(out).map_err(|e| invalid(format!("tojson: {e}")))?;
    let text = if ensure_ascii {
        text.encode_utf16()
            .map(|unit| match unit {
                0..=0x7f => char::from(unit as u8).to_string(),
                _ => format!("\\u{unit:04x}"),
            })
            .collect()
    } else {
        text
    };
    Ok(minijinja::Value::from_safe_string(text))
}

/// `json.dumps`' default separators: `", "` between items, `": "` after a key.
struct PythonSeparators;

/// `", "` before every item but a container's first.
fn item_separator<W: ?Sized + std::io::Write>(writer: &mut W, first: bool) -> std::io::Result<()> {
    if first {
        Ok(())
    } else {
        writer.write_all(b", ")
    }
}

impl serde_json::ser::Formatter for PythonSeparators {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        item_separator(writer, first)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        item_separator(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// transformers' `strftime_now(format)`: the local time now, for templates that state today's
/// date (Llama 3.1's).
fn strftime_now(format: String) -> std::result::Result<String, minijinja::Error> {
    use std::fmt::Write;
    let mut text = String::new();
    write!(text, "{}", chrono::Local::now().format(&format)).map_err(|_| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("strftime_now: {format:?} is not a strftime format"),
        )
    })?;
    Ok(text)
}

impl ChatTokenizer {
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            if let Some(slow) = ["tokenizer.model", "vocab.json"]
                .iter()
                .find(|f| dir.join(f).exists())
            {
                return Err(anyhow!(
                    "{}: no tokenizer.json, only a slow tokenizer's {slow}: write tokenizer.json with transformers (AutoTokenizer.from_pretrained(dir).save_pretrained(dir))",
                    dir.display()
                ));
            }
        }
        let tokenizer = Tokenizer::from_file(&path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let tokenizer_config = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or_default();
        let template_file = dir.join("chat_template.jinja");
        let config_file = dir.join("tokenizer_config.json");
        let mut default_template = None;
        let (chat_template, template_source) = if template_file.exists() {
            let text = std::fs::read_to_string(&template_file)
                .with_context(|| format!("cannot read {}", template_file.display()))?;
            (text, template_file.display().to_string())
        } else {
            match config_template(tokenizer_config.get("chat_template"), &config_file)? {
                Some(text) => (text, format!("{}'s chat_template", config_file.display())),
                None => {
                    default_template = Some(default_template_warning(dir, &tokenizer));
                    (
                        CHATML_TEMPLATE.to_string(),
                        format!("ChatML (the default: {} has none)", dir.display()),
                    )
                }
            }
        };
        if chat_template.trim().is_empty() {
            return Err(anyhow!(
                "{template_source}: the chat template is empty (every prompt would be no text)"
            ));
        }
        // What transformers gives a template: each special token the tokenizer config sets.
        let special_tokens: std::collections::BTreeMap<String, String> = SPECIAL_TOKENS
            .iter()
            .filter_map(|key| Some((key.to_string(), token_string(tokenizer_config.get(*key))?)))
            .collect();
        let mut eos_ids = Vec::new();
        for file in ["generation_config.json", "config.json"] {
            let path = dir.join(file);
            if let Some(json) = read_json(&path)? {
                eos_ids.extend(ids(json.get("eos_token_id"), &path));
            }
        }
        if let Some(eos_token) = special_tokens.get("eos_token") {
            match tokenizer.token_to_id(eos_token) {
                Some(id) => eos_ids.push(id),
                None => tracing::warn!(
                    "{}: eos_token `{eos_token}` is no token of tokenizer.json: it is not an EOS",
                    config_file.display()
                ),
            }
        }
        eos_ids.sort_unstable();
        eos_ids.dedup();
        // Without a pad or EOS token, any id: padding is masked out.
        let pad_id = token_string(tokenizer_config.get("pad_token"))
            .and_then(|t| tokenizer.token_to_id(&t))
            .or(eos_ids.first().copied())
            .unwrap_or(0);
        let templates = template_environment(chat_template).map_err(|e| e.to_string());
        Ok(ChatTokenizer {
            tokenizer,
            templates,
            template_source,
            default_template,
            special_tokens,
            eos_ids,
            pad_id,
        })
    }

    /// Text that is already a whole prompt (a rendered chat template carries its own BOS):
    /// as `tokenizer(text, add_special_tokens=False)`.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        self.encode_with(text, false)
    }

    /// Raw text as `tokenizer(text)` encodes it: with the special tokens the tokenizer's
    /// post-processor adds (Llama's BOS).
    pub fn encode_with_special_tokens(&self, text: &str) -> Result<Vec<i64>> {
        self.encode_with(text, true)
    }

    fn encode_with(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>> {
        let encoding = self
            .tokenizer
            .encode(text, add_special_tokens)
            .map_err(|e| anyhow!("tokenizer.json: {e}"))?;
        Ok(encoding.get_ids().iter().map(|&id| id as i64).collect())
    }

    /// Decodes ids, dropping special tokens (EOS, padding).
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&id| id as u32).collect();
        self.tokenizer
            .decode(&ids, true)
            .map_err(|e| anyhow!("tokenizer.json: {e}"))
    }

    /// Renders messages with the chat template, as `apply_chat_template(..., tokenize=False)`.
    pub fn render_chat(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        if let Some(warning) = &self.default_template {
            crate::warn_once::warn_once(warning, || warning.clone());
        }
        let template = self
            .templates
            .as_ref()
            .map_err(|e| anyhow!("chat template of {}: {e}", self.template_source))?
            .get_template(CHAT_TEMPLATE)
            .map_err(|e| anyhow!("chat template of {}: {e}", self.template_source))?;
        template
            .render(minijinja::context! {
                // In a dict's order, as Python's: role, then content.
                messages => messages
                    .iter()
                    .map(|m| minijinja::Value::from_pairs([("role", m.role.clone()), ("content", m.content.clone())]))
                    .collect::<Vec<_>>(),
                add_generation_prompt => add_generation_prompt,
                // transformers passes them as None: `tools is not none` holds for neither.
                tools => (),
                documents => (),
                ..minijinja::Value::from_pairs(self.special_tokens.clone())
            })
            .map_err(|e| match e.kind() {
                minijinja::ErrorKind::OutOfFuel => anyhow!(
                    "chat template of {}: rendering one prompt took more than {TEMPLATE_FUEL} steps (a loop that runs without end, or over a huge range?)",
                    self.template_source
                ),
                _ => anyhow!("chat template of {}: {e}", self.template_source),
            })
    }

    /// A prompt to generate from, as TRL renders it: the assistant's turn opened after the
    /// messages — or, where the last message is the assistant's (a prefill such as
    /// `<think>`), the text ending inside that turn after its content, which the completion
    /// continues (transformers' `continue_final_message`, found by the same tag).
    pub fn render_prompt(&self, messages: &[Message]) -> Result<String> {
        const TAG: &str = "CONTINUE_FINAL_MESSAGE_TAG ";
        if messages.last().is_none_or(|last| last.role != "assistant") {
            return self.render_chat(messages, true);
        }
        let mut tagged = messages.to_vec();
        if let Some(last) = tagged.last_mut() {
            last.content.push_str(TAG);
        }
        let rendered = self.render_chat(&tagged, false)?;
        let Some(at) = rendered.rfind(TAG.trim_end()) else {
            bail!(
                "chat template of {}: the prompt ends with an assistant message to continue, but the template does not write that message's content",
                self.template_source
            );
        };
        // A template that trims the content trims the tag's space, and what came before it.
        Ok(if rendered[at..].starts_with(TAG) {
            rendered[..at].to_string()
        } else {
            rendered[..at].trim_end().to_string()
        })
    }

    /// The token a reference completion ends with in supervised fine-tuning: the one the chat
    /// template closes an assistant turn with, where it is an end-of-sequence token (Qwen's
    /// `<|im_end|>`, Llama 3's `<|eot_id|>`), as TRL trains a templated completion; else the
    /// tokenizer config's `eos_token`; else the lowest EOS id (none without an EOS). (The lowest
    /// alone gave a Qwen2.5-Instruct `<|endoftext|>`, which its template never ends a turn with.)
    pub fn turn_end_id(&self) -> Option<u32> {
        const MARK: &str = "\u{2063}crpo reference\u{2063}";
        let chat = [Message::new("user", "?"), Message::new("assistant", MARK)];
        let templated = self
            .render_chat(&chat, false)
            .ok()
            .and_then(|text| text.find(MARK).map(|at| text[at + MARK.len()..].to_string()))
            .and_then(|after| self.encode(&after).ok())
            .and_then(|ids| ids.first().map(|&id| id as u32))
            .filter(|id| self.eos_ids.contains(id));
        templated
            .or_else(|| {
                let token = self.special_tokens.get("eos_token")?;
                self.tokenizer
                    .token_to_id(token)
                    .filter(|id| self.eos_ids.contains(id))
            })
            .or(self.eos_ids.first().copied())
    }

    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Number of ids the tokenizer can produce; the embedding may be larger (padded).
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The largest id the tokenizer can produce or the model is told to stop or pad with,
    /// and its token: the model's vocabulary must reach it.
    pub fn largest_id(&self) -> (u32, String) {
        let (token, id) = self
            .tokenizer
            .get_vocab(true)
            .into_iter()
            .max_by_key(|(_, id)| *id)
            .unwrap_or_default();
        let special = self
            .eos_ids
            .iter()
            .copied()
            .chain([self.pad_id])
            .max()
            .unwrap_or(0);
        if special > id {
            (special, format!("special id {special} of the generation config"))
        } else {
            (id, format!("`{token}`"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tiny preset's tokenizer with `edit` applied to its tokenizer_config.json.
    fn tokenizer_with(edit: impl Fn(&mut serde_json::Value)) -> (tempfile::TempDir, Result<ChatTokenizer>) {
        let dir = tempfile::tempdir().unwrap();
        crpo_plugins_policy::presets::write_tiny(dir.path(), 0).unwrap();
        let path = dir.path().join("tokenizer_config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut config);
        std::fs::write(&path, config.to_string()).unwrap();
        let _ = std::fs::remove_file(dir.path().join("chat_template.jinja"));
        let tokenizer = ChatTokenizer::from_dir(dir.path());
        (dir, tokenizer)
    }

    fn rendered(template: serde_json::Value) -> Result<String> {
        let (_dir, tokenizer) = tokenizer_with(|config| {
            config["chat_template"] = template.clone();
            config["pad_token"] = "<|endoftext|>".into();
            config.as_object_mut().unwrap().remove("bos_token");
        });
        tokenizer?.render_chat(&[Message::new("user", "hi")], true)
    }

    #[test]
    fn a_model_without_a_template_is_warned_of_louder_when_chatml_is_no_token_of_it() {
        let (dir, tokenizer) = tokenizer_with(|config| {
            config.as_object_mut().unwrap().remove("chat_template");
        });
        let tokenizer = tokenizer.unwrap();
        assert!(tokenizer.template_source.starts_with("ChatML"));
        let quiet = default_template_warning(dir.path(), &tokenizer.tokenizer);
        assert!(
            quiet.contains("no chat template") && !quiet.contains("plain text"),
            "{quiet}"
        );
        // A base model's tokenizer: the same, without ChatML's tokens.
        let path = dir.path().join("tokenizer.json");
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        json["added_tokens"]
            .as_array_mut()
            .unwrap()
            .retain(|token| !token["content"].as_str().unwrap().starts_with("<|im_"));
        let vocab = json["model"]["vocab"].as_object_mut().unwrap();
        vocab.retain(|token, _| !token.starts_with("<|im_"));
        std::fs::write(&path, json.to_string()).unwrap();
        let base = Tokenizer::from_file(&path).unwrap();
        let loud = default_template_warning(dir.path(), &base);
        assert!(
            loud.contains("<|im_start|> and <|im_end|> are no tokens") && loud.contains("plain text"),
            "{loud}"
        );
    }

    #[test]
    fn a_template_that_runs_on_is_stopped_naming_its_file() {
        let nested =
            "{% for i in range(10000) %}{% for j in range(10000) %}xxxxxxxxxx{% endfor %}{% endfor %}";
        let error = rendered(nested.into()).unwrap_err().to_string();
        assert!(
            error.contains("tokenizer_config.json") && error.contains("took more than"),
            "{error}"
        );
    }

    #[test]
    fn an_eos_token_id_that_is_no_id_is_left_out_and_none_left_runs_to_the_budget() {
        let (dir, _) = tokenizer_with(|config| {
            config.as_object_mut().unwrap().remove("eos_token");
        });
        let _ = std::fs::remove_file(dir.path().join("config.json"));
        let path = dir.path().join("generation_config.json");
        std::fs::write(&path, r#"{"eos_token_id": [2, -1, "abc"]}"#).unwrap();
        assert_eq!(ChatTokenizer::from_dir(dir.path()).unwrap().eos_ids(), [2]);
        std::fs::write(&path, r#"{"eos_token_id": [-1, 1.5]}"#).unwrap();
        let none = ChatTokenizer::from_dir(dir.path()).unwrap();
        assert!(none.eos_ids().is_empty());
        assert_eq!(none.turn_end_id(), None);
    }

    /// Two EOS tokens, the lower one not what the template ends a turn with: sft's reference
    /// ends with the template's (`<|im_end|>`), or without a template's help the tokenizer
    /// config's `eos_token`.
    #[test]
    fn a_reference_ends_with_the_token_that_ends_the_template_s_turn() {
        let (dir, tokenizer) = tokenizer_with(|_| {});
        let im_end = tokenizer.unwrap().turn_end_id().unwrap();
        let path = dir.path().join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let tokenizer = ChatTokenizer::from_dir(dir.path()).unwrap();
        let end_of_text = tokenizer.tokenizer.token_to_id("<|endoftext|>").unwrap();
        assert!(end_of_text < im_end);
        config["eos_token_id"] = serde_json::json!([end_of_text, im_end]);
        std::fs::write(&path, config.to_string()).unwrap();
        let two = ChatTokenizer::from_dir(dir.path()).unwrap();
        assert_eq!(two.eos_ids(), [end_of_text, im_end]);
        assert_eq!(two.turn_end_id(), Some(im_end));
        // A template that ends a turn with no EOS: the tokenizer config's eos_token.
        let path = dir.path().join("tokenizer_config.json");
        let mut tokenizer_config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        tokenizer_config["chat_template"] = "{% for m in messages %}{{ m.content }}\n{% endfor %}".into();
        std::fs::write(&path, tokenizer_config.to_string()).unwrap();
        assert_eq!(
            ChatTokenizer::from_dir(dir.path()).unwrap().turn_end_id(),
            Some(im_end)
        );
    }

    #[test]
    fn a_slow_tokenizer_alone_is_named_with_how_to_convert_it() {
        let (dir, _) = tokenizer_with(|_| {});
        std::fs::rename(dir.path().join("tokenizer.json"), dir.path().join("vocab.json")).unwrap();
        let error = ChatTokenizer::from_dir(dir.path()).err().unwrap().to_string();
        assert!(
            error.contains("vocab.json") && error.contains("save_pretrained"),
            "{error}"
        );
    }

    #[test]
    fn named_templates_give_the_default_one_as_transformers() {
        let named = serde_json::json!([
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "D:{{ messages[0].content }}"}
        ]);
        assert_eq!(rendered(named).unwrap(), "D:hi");
        let error = rendered(serde_json::json!([{"name": "tool_use", "template": "tools"}]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("tokenizer_config.json")
                && error.contains("tool_use")
                && error.contains("default"),
            "{error}"
        );
        let error = rendered(serde_json::json!(3)).unwrap_err().to_string();
        assert!(error.contains("`chat_template` is 3"), "{error}");
    }

    #[test]
    fn a_template_sees_the_set_special_tokens_and_today() {
        let text =
            rendered("{{ pad_token }}|{{ bos_token is defined }}|{{ strftime_now('%Y') }}".into()).unwrap();
        let year = chrono::Local::now().format("%Y").to_string();
        assert_eq!(text, format!("<|endoftext|>|False|{year}"), "as Python prints it");
    }

    /// `tokenizer(text)` adds what the post-processor adds (Llama's BOS); a rendered template
    /// brings its own, so `encode` adds nothing.
    #[test]
    fn raw_text_gets_the_post_processor_s_special_tokens() {
        let (dir, tokenizer) = tokenizer_with(|_| {});
        let plain = tokenizer.unwrap();
        let path = dir.path().join("tokenizer.json");
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let bos = "<|endoftext|>";
        let id = plain.tokenizer.token_to_id(bos).unwrap();
        json["post_processor"] = serde_json::json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [id], "tokens": [bos]}}
        });
        std::fs::write(&path, json.to_string()).unwrap();
        let with_bos = ChatTokenizer::from_dir(dir.path()).unwrap();
        let text = "The patient has";
        let ids = with_bos.encode(text).unwrap();
        assert_eq!(ids, plain.encode(text).unwrap());
        assert_eq!(
            with_bos.encode_with_special_tokens(text).unwrap(),
            [&[id as i64][..], &ids].concat()
        );
    }
}
