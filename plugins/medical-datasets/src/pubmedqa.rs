//! PubMedQA, in either layout people have:
//! - the original `ori_pqal.json`: ONE JSON object keyed by PMID, each value `{"QUESTION",
//!   "CONTEXTS": […], "LABELS", "MESHES", "YEAR", "reasoning_required_pred",
//!   "reasoning_free_pred", "final_decision", "LONG_ANSWER"}`;
//! - the Hugging Face export (`pqa_labeled`), JSONL or a JSON array of `{"pubid", "question",
//!   "context": {"contexts", "labels", "meshes"}, "long_answer", "final_decision"}`;
//! - rows in the original's fields, one a line (BigBio's source layout).
//!
//! The answer `final_decision` (yes | no | maybe) becomes option A (yes), B (no) or C (maybe),
//! so the letter rules of the objectives apply unchanged. The question is asked after its
//! abstract contexts unless the option `include_context = false`.

use crate::records::{
    file_records, member_value_lines, metadata_without, parse_records, question_field, read_text, records,
    string_field, Members,
};
use crate::FieldError;
use crpo_sdk::{
    parse_options, AnswerOption, DatasetPlugin, DatasetRead, DatasetSource, Example, PluginError, PluginInfo,
    Prompt, RecordError,
};
use serde::Deserialize;
use serde_json::{Map, Value};

const DECISIONS: [(&str, &str); 3] = [("A", "yes"), ("B", "no"), ("C", "maybe")];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    #[serde(default = "yes")]
    include_context: bool,
}

fn yes() -> bool {
    true
}

fn contexts(value: Option<&Value>, field: &str) -> Result<Vec<String>, FieldError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| (field.to_string(), "not a list of strings".to_string()))
            })
            .collect(),
        Some(_) => Err((field.into(), "not a list of strings".into())),
    }
}

const FLAT_CONTEXTS: &str = "context.contexts";

/// A PubMedQA question is asked about its abstract: without one it is mostly unanswerable,
/// so a record that has none is malformed unless the context is left out on purpose.
fn require_context(contexts: &[String], include_context: bool, field: &str) -> Result<(), FieldError> {
    if include_context && contexts.iter().all(|c| c.trim().is_empty()) {
        return Err((
            field.into(),
            "missing or empty: the question is asked about its abstract (set the dataset option include_context = false to ask without one)".into(),
        ));
    }
    Ok(())
}

fn example(
    id: String,
    question: &str,
    contexts: &[String],
    decision: &str,
    include_context: bool,
    metadata: Map<String, Value>,
) -> Result<Example, FieldError> {
    let decision = decision.trim().to_lowercase();
    let Some((answer, _)) = DECISIONS.iter().find(|(_, d)| *d == decision) else {
        return Err((
            "final_decision".into(),
            format!("`{decision}`: expected yes, no or maybe"),
        ));
    };
    let prompt = if include_context && !contexts.is_empty() {
        format!("Context:\n{}\n\nQuestion: {question}", contexts.join("\n"))
    } else {
        question.to_string()
    };
    Ok(Example {
        id,
        prompt: Prompt::Text(prompt),
        answer: Some(answer.to_string()),
        options: DECISIONS
            .iter()
            .map(|(key, text)| AnswerOption {
                key: key.to_string(),
                text: text.to_string(),
            })
            .collect(),
        reference_completion: None,
        metadata,
    })
}

/// A Hugging Face export row, or a row in the original's fields (BigBio's source layout).
fn parse_row(record: &Map<String, Value>, id: &str, include_context: bool) -> Result<Example, FieldError> {
    if record.contains_key("QUESTION") && !record.contains_key("question") {
        let id = match record.get("pubid").or_else(|| record.get("PMID")) {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.clone(),
            _ => id.to_string(),
        };
        return parse_original(&id, record, include_context);
    }
    let question = question_field(record, "question")?;
    // `context` as the export nests it, as a string or list, or flattened into
    // `context.contexts` (`Dataset.flatten()`, `pandas.json_normalize`).
    let contexts = match (record.get("context"), record.get(FLAT_CONTEXTS)) {
        (Some(Value::Object(context)), _) => contexts(context.get("contexts"), "context.contexts")?,
        (None | Some(Value::Null), Some(flat)) => contexts(Some(flat), FLAT_CONTEXTS)?,
        (context, _) => contexts(context, "context")?,
    };
    require_context(&contexts, include_context, "context")?;
    let id = match record.get("pubid") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => id.to_string(),
    };
    let decision = string_field(record, "final_decision")?;
    example(
        id,
        question,
        &contexts,
        decision,
        include_context,
        metadata_without(
            record,
            // `final_decision` and `pubid` stay: columns a TRL reward function may name.
            &["question", "context", FLAT_CONTEXTS],
        ),
    )
}

/// A value of the original file, keyed by its PMID.
fn parse_original(
    pmid: &str,
    record: &Map<String, Value>,
    include_context: bool,
) -> Result<Example, FieldError> {
    let question = question_field(record, "QUESTION")?;
    let contexts = contexts(record.get("CONTEXTS"), "CONTEXTS")?;
    require_context(&contexts, include_context, "CONTEXTS")?;
    let decision = string_field(record, "final_decision")?;
    example(
        pmid.to_string(),
        question,
        &contexts,
        decision,
        include_context,
        metadata_without(record, &["QUESTION", "CONTEXTS"]),
    )
}

pub struct PubMedQaReader;

impl DatasetPlugin for PubMedQaReader {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            "pubmedqa",
            env!("CARGO_PKG_VERSION"),
            "PubMedQA: ori_pqal.json (object keyed by PMID) or the Hugging Face rows; yes/no/maybe as A/B/C",
        )
    }

    fn read(&self, source: &DatasetSource) -> Result<DatasetRead, PluginError> {
        let options: Options = parse_options(&source.options)?;
        let file = source.path.display().to_string();
        let parse = |record: &Map<String, Value>, id: &str| parse_row(record, id, options.include_context);
        if crate::parquet_rows::is_parquet(&source.path) {
            // Parquet holds the Hugging Face rows only.
            return Ok(parse_records(&file, file_records(&source.path)?, parse));
        }
        let text = read_text(&source.path)?;
        // The original is one object whose values are records with a QUESTION; anything else
        // is rows.
        let by_pmid = serde_json::from_str::<Members>(&text)
            .ok()
            .filter(|members| members.0.iter().any(|(_, v)| v.get("QUESTION").is_some()));
        let Some(Members(by_pmid)) = by_pmid else {
            return Ok(parse_records(&file, records(&text), parse));
        };
        let lines = member_value_lines(&text);
        let mut read = DatasetRead::default();
        let mut first_line: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (index, (pmid, value)) in by_pmid.iter().enumerate() {
            let line = lines.get(index).copied().unwrap_or(1);
            let parsed = match value {
                _ if first_line.contains_key(pmid.as_str()) => Err((
                    pmid.clone(),
                    format!(
                        "PMID {pmid} is given again (first on line {}): each question once",
                        first_line[pmid.as_str()]
                    ),
                )),
                Value::Object(record) => parse_original(pmid, record, options.include_context)
                    .map_err(|(field, message)| (format!("{pmid}.{field}"), message)),
                _ => Err((
                    pmid.clone(),
                    format!("not a JSON object of QUESTION, CONTEXTS, final_decision (it is {value})"),
                )),
            };
            first_line.entry(pmid).or_insert(line);
            match parsed {
                Ok(example) => read.examples.push(example),
                Err((field, message)) => read.malformed.push(RecordError {
                    file: file.clone(),
                    line,
                    field,
                    message,
                }),
            }
        }
        Ok(read)
    }
}

pub static PUBMEDQA: PubMedQaReader = PubMedQaReader;
crpo_sdk::register_dataset!(PUBMEDQA);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(text: &str, options: Value) -> DatasetRead {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pubmedqa.json");
        std::fs::write(&path, text).unwrap();
        PUBMEDQA.read(&DatasetSource { path, options }).unwrap()
    }

    #[test]
    fn reads_the_original_object_keyed_by_pmid_in_file_order() {
        let text = r#"{
  "21645374": {"QUESTION": "Do mitochondria play a role?", "CONTEXTS": ["Programmed cell death...", "Results {show}"],
               "LABELS": ["BACKGROUND", "RESULTS"], "YEAR": "2011", "final_decision": "yes", "LONG_ANSWER": "Yes."},
  "16418930": {"QUESTION": "Is it useful?", "CONTEXTS": ["..."], "final_decision": "perhaps"},
  "11111111": {"QUESTION": "Does X?", "CONTEXTS": [], "final_decision": "maybe"}
}"#;
        let read = read(text, Value::Null);
        assert_eq!(read.examples.len(), 1);
        assert_eq!(read.examples[0].id, "21645374");
        assert_eq!(read.examples[0].answer.as_deref(), Some("A"));
        assert!(read.examples[0]
            .prompt
            .question()
            .starts_with("Context:\nProgrammed cell death"));
        assert_eq!(read.examples[0].metadata["LONG_ANSWER"], "Yes.");
        let bad: Vec<(usize, &str)> = read
            .malformed
            .iter()
            .map(|m| (m.line, m.field.as_str()))
            .collect();
        assert_eq!(
            bad,
            [(4, "16418930.final_decision"), (5, "11111111.CONTEXTS")],
            "a question without its abstract is malformed"
        );
    }

    /// A PMID given twice: the second is malformed, naming the first's line (serde_json's map
    /// kept the second in silence, in the first's place).
    #[test]
    fn a_pmid_given_twice_is_malformed_naming_the_first() {
        let text = r#"{
  "111": {"QUESTION": "Does X help?", "CONTEXTS": ["a"], "final_decision": "yes"},
  "222": {"QUESTION": "Does Y help?", "CONTEXTS": ["b"], "final_decision": "no"},
  "111": {"QUESTION": "Dup PMID", "CONTEXTS": ["c"], "final_decision": "no"}
}"#;
        let read = read(text, Value::Null);
        let questions: Vec<&str> = read.examples.iter().map(|e| e.prompt.question()).collect();
        assert!(
            questions[0].ends_with("Does X help?") && questions.len() == 2,
            "{questions:?}"
        );
        let bad = &read.malformed[0];
        assert_eq!((bad.line, bad.field.as_str()), (4, "111"));
        assert!(bad.message.contains("first on line 2"), "{}", bad.message);
    }

    /// BigBio's source layout: the original's fields, one row a line.
    #[test]
    fn reads_rows_in_the_original_s_fields() {
        let text = concat!(
            r#"{"QUESTION": "Does X help?", "CONTEXTS": ["Trial of X."], "LABELS": ["RESULTS"], "final_decision": "no", "LONG_ANSWER": "No."}"#,
            "\n",
            r#"{"pubid": 7, "QUESTION": "Does Y?", "CONTEXTS": ["Y."], "final_decision": "maybe"}"#,
            "\n"
        );
        let read = read(text, Value::Null);
        assert!(read.malformed.is_empty(), "{:?}", read.malformed);
        let answers: Vec<_> = read.examples.iter().map(|e| e.answer.as_deref()).collect();
        assert_eq!(answers, [Some("B"), Some("C")]);
        assert_eq!(read.examples[1].id, "7");
        assert!(read.examples[0]
            .prompt
            .question()
            .ends_with("Question: Does X help?"));
    }

    /// A value that is not a record keeps its own line, and the records after it theirs.
    #[test]
    fn a_member_that_is_not_a_record_is_named_at_its_line() {
        let text = r#"{
  "1": null,
  "2": {"QUESTION": "Is it?", "CONTEXTS": ["Text."], "final_decision": "yes"},
  "3":
    {"QUESTION": "Is it?", "CONTEXTS": ["Text."], "final_decision": "never"}
}"#;
        let read = read(text, Value::Null);
        assert_eq!(read.examples.len(), 1);
        let bad: Vec<(usize, &str)> = read
            .malformed
            .iter()
            .map(|m| (m.line, m.field.as_str()))
            .collect();
        assert_eq!(bad, [(2, "1"), (5, "3.final_decision")]);
        assert!(
            read.malformed[0].message.contains("null"),
            "{}",
            read.malformed[0].message
        );
    }

    /// The nested context flattened (`Dataset.flatten()`) or given as text is the context;
    /// none at all is malformed unless include_context = false.
    #[test]
    fn a_flattened_or_textual_context_is_read_and_a_missing_one_is_malformed() {
        let flat = json!({"question": "Q1?", "context.contexts": ["Abstract one."], "final_decision": "yes"});
        let text = json!({"question": "Q2?", "context": "Abstract two.", "final_decision": "no"});
        let none = json!({"question": "Q3?", "final_decision": "maybe"});
        let read_all = |options| read(&format!("{flat}\n{text}\n{none}\n"), options);
        let with_context = read_all(Value::Null);
        let questions: Vec<&str> = with_context
            .examples
            .iter()
            .map(|e| e.prompt.question())
            .collect();
        assert_eq!(
            questions,
            [
                "Context:\nAbstract one.\n\nQuestion: Q1?",
                "Context:\nAbstract two.\n\nQuestion: Q2?"
            ]
        );
        assert_eq!(with_context.malformed[0].line, 3);
        assert_eq!(with_context.malformed[0].field, "context");
        assert_eq!(read_all(json!({"include_context": false})).examples.len(), 3);
    }

    #[test]
    fn reads_hugging_face_rows_with_or_without_context() {
        let row = json!({"pubid": 25429730, "question": "Are group 2 ILCs required?",
            "context": {"contexts": ["Chronic rhinosinusitis..."], "labels": ["BACKGROUND"], "meshes": []},
            "long_answer": "...", "final_decision": "no"});
        let read = read(&format!("{row}\n{row}\n"), json!({"include_context": false}));
        assert_eq!(read.examples.len(), 2);
        assert_eq!(read.examples[0].id, "25429730");
        assert_eq!(read.examples[0].answer.as_deref(), Some("B"));
        assert_eq!(read.examples[0].prompt.question(), "Are group 2 ILCs required?");
        assert_eq!(read.examples[0].option_text("C"), Some("maybe"));
    }
}
