//! The tokenizer and chat template of a Hugging Face model directory.
//!
//! `tokenizer.json` is read with the tokenizers crate. The chat template comes from
//! `chat_template.jinja` (transformers 5) or `tokenizer_config.json`'s `chat_template`, and is
//! rendered with minijinja as transformers renders it (trim_blocks, lstrip_blocks, Python
//! string methods, `raise_exception`); a model without one gets ChatML. EOS ids are the union of
//! `generation_config.json`, `config.json` and the tokenizer config's `eos_token`.

use anyhow::{anyhow, Context, Result};
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
    chat_template: String,
    /// Where the template came from, for its errors ("M/tokenizer_config.json's chat_template").
    template_source: String,
    bos_token: String,
    eos_token: String,
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

fn ids(value: Option<&serde_json::Value>) -> Vec<u32> {
    match value {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_u64()).map(|n| n as u32).collect(),
        _ => Vec::new(),
    }
}

impl ChatTokenizer {
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let tokenizer_config = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or_default();
        let template_file = dir.join("chat_template.jinja");
        let config_file = dir.join("tokenizer_config.json");
        let (chat_template, template_source) = if template_file.exists() {
            let text = std::fs::read_to_string(&template_file)
                .with_context(|| format!("cannot read {}", template_file.display()))?;
            (text, template_file.display().to_string())
        } else {
            match tokenizer_config.get("chat_template").and_then(|t| t.as_str()) {
                Some(text) => (
                    text.to_string(),
                    format!("{}'s chat_template", config_file.display()),
                ),
                None => (
                    CHATML_TEMPLATE.to_string(),
                    format!("ChatML (the default: {} has none)", dir.display()),
                ),
            }
        };
        if chat_template.trim().is_empty() {
            return Err(anyhow!(
                "{template_source}: the chat template is empty (every prompt would be no text)"
            ));
        }
        let eos_token = token_string(tokenizer_config.get("eos_token")).unwrap_or_default();
        let bos_token = token_string(tokenizer_config.get("bos_token")).unwrap_or_default();
        let mut eos_ids = Vec::new();
        for file in ["generation_config.json", "config.json"] {
            if let Some(json) = read_json(&dir.join(file))? {
                eos_ids.extend(ids(json.get("eos_token_id")));
            }
        }
        eos_ids.extend(tokenizer.token_to_id(&eos_token));
        eos_ids.sort_unstable();
        eos_ids.dedup();
        if eos_ids.is_empty() {
            return Err(anyhow!(
                "{}: no EOS token (generation_config.json, config.json or tokenizer_config.json)",
                dir.display()
            ));
        }
        let pad_id = token_string(tokenizer_config.get("pad_token"))
            .and_then(|t| tokenizer.token_to_id(&t))
            .unwrap_or(eos_ids[0]);
        Ok(ChatTokenizer {
            tokenizer,
            chat_template,
            template_source,
            bos_token,
            eos_token,
            eos_ids,
            pad_id,
        })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let encoding = self
            .tokenizer
            .encode(text, false)
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
        let mut env = minijinja::Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| anyhow!("chat template of {}: {e}", self.template_source))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        let template = env
            .template_from_str(&self.chat_template)
            .map_err(|e| anyhow!("chat template of {}: {e}", self.template_source))?;
        template
            .render(minijinja::context! {
                messages => messages
                    .iter()
                    .map(|m| std::collections::BTreeMap::from([("role", m.role.clone()), ("content", m.content.clone())]))
                    .collect::<Vec<_>>(),
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token.clone(),
                eos_token => self.eos_token.clone(),
            })
            .map_err(|e| anyhow!("chat template of {}: {e}", self.template_source))
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
