//! `{{ident}}`: a JSONL dataset reader (written by `crpo-host new dataset`): one record a line,
//! `{"question": "…", "options": {"A": "…", …}, "answer": "A"}`; `options` may be left out
//! for free-text answers. The option `question_field` renames the question's field. Replace
//! the parsing with your format's.
use crpo_sdk::{
    parse_options, AnswerOption, DatasetPlugin, DatasetRead, DatasetSource, Example, PluginError, PluginInfo,
    Prompt, RecordError,
};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Options {
    question_field: String,
}

impl Default for Options {
    fn default() -> Self {
        Options { question_field: "question".into() }
    }
}

pub struct Reader;

impl DatasetPlugin for Reader {
    fn info(&self) -> PluginInfo {
        PluginInfo::new("{{ident}}", env!("CARGO_PKG_VERSION"), "JSONL questions: question, options, answer")
    }

    fn read(&self, source: &DatasetSource) -> Result<DatasetRead, PluginError> {
        let options: Options = parse_options(&source.options)?;
        let file = source.path.display().to_string();
        let text = std::fs::read_to_string(&source.path)
            .map_err(|e| PluginError::failed(format!("cannot read {file}: {e}")))?;
        let mut read = DatasetRead::default();
        for (index, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let id = format!("{file}:{}", index + 1);
            match parse(line, &options.question_field, &id) {
                Ok(example) => read.examples.push(example),
                Err((field, message)) => read.malformed.push(RecordError {
                    file: file.clone(),
                    line: index + 1,
                    field,
                    message,
                }),
            }
        }
        Ok(read)
    }
}

#[derive(Deserialize)]
struct Record {
    #[serde(default)]
    options: BTreeMap<String, String>,
    answer: String,
}

/// One line as an example, or the field that is wrong and why.
fn parse(line: &str, question_field: &str, id: &str) -> Result<Example, (String, String)> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| ("record".into(), e.to_string()))?;
    let question = value.get(question_field).and_then(|q| q.as_str());
    let question = question.ok_or_else(|| (question_field.to_string(), "missing or not a string".into()))?;
    let record: Record = serde_json::from_value(value.clone()).map_err(|e| ("record".into(), e.to_string()))?;
    if !record.options.is_empty() && !record.options.contains_key(&record.answer) {
        return Err(("answer".into(), format!("`{}` is not one of the options", record.answer)));
    }
    Ok(Example {
        id: id.to_string(),
        prompt: Prompt::Text(question.to_string()),
        answer: Some(record.answer),
        options: record.options.into_iter().map(|(key, text)| AnswerOption { key, text }).collect(),
        ..Example::default()
    })
}

crpo_sdk::export_plugin_library! {
    rewards: [],
    datasets: [Reader],
}
