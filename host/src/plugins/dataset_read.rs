//! Reading a file through a dataset plugin, holding what it returns to the contract every
//! reader keeps (docs/plugin-authoring.md): each example has an id and a question, option
//! keys are distinct and the gold answer is one of them. A reader that breaks it is named
//! with its library (its examples would otherwise train, scored against a gold no
//! completion can give).

use super::Registered;
use anyhow::{anyhow, Context};
use crpo_sdk::{DatasetPlugin, DatasetRead, DatasetSource, Example, Prompt};
use std::collections::HashSet;

/// `source` read by `dataset`, its examples checked; a malformed record without a file is
/// given the source's.
pub fn read_through(
    dataset: &Registered<dyn DatasetPlugin>,
    source: &DatasetSource,
) -> anyhow::Result<DatasetRead> {
    let (name, path) = (&dataset.info.name, source.path.display());
    let mut read = dataset
        .plugin()
        .read(source)
        .with_context(|| format!("dataset `{name}` ({}) reading {path}", dataset.origin))?;
    for record in &mut read.malformed {
        if record.file.trim().is_empty() {
            record.file = path.to_string();
        }
    }
    let duplicates = check_examples(&read.examples).map_err(|why| {
        anyhow!(
            "dataset `{name}` ({}) read {path} into an example no run can use: {why}",
            dataset.origin
        )
    })?;
    if let Some((count, first)) = duplicates {
        tracing::warn!(
            "{count} example(s) of {path} share an id with an earlier one (first: `{first}`): samples and evaluations name examples by id"
        );
    }
    fill_missing_columns(&mut read.examples);
    Ok(read)
}

/// Gives every example each metadata column some example of the file has, `null` where its
/// record lacks it — as `datasets` unifies a file's columns — so a reward reading a column
/// (a Python function's `solution=`) gets `None` for that row instead of failing when the
/// row is first drawn, hours into a run.
fn fill_missing_columns(examples: &mut [Example]) {
    let mut columns: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for example in examples.iter() {
        for key in example.metadata.keys() {
            if seen.insert(key.as_str()) {
                columns.push(key.clone());
            }
        }
    }
    for example in examples.iter_mut() {
        if example.metadata.len() < columns.len() {
            for column in &columns {
                if !example.metadata.contains_key(column) {
                    example.metadata.insert(column.clone(), serde_json::Value::Null);
                }
            }
        }
    }
}

/// How many examples repeat an earlier one's id, and the first of those ids.
pub fn repeated_ids(examples: &[Example]) -> Option<(usize, String)> {
    let mut ids = HashSet::new();
    let (mut repeated, mut first_repeated) = (0, None);
    for example in examples {
        if !ids.insert(example.id.as_str()) {
            repeated += 1;
            first_repeated.get_or_insert_with(|| example.id.clone());
        }
    }
    first_repeated.map(|first| (repeated, first))
}

/// Why the first unusable example is unusable; otherwise how many ids repeat, and the first.
fn check_examples(examples: &[Example]) -> Result<Option<(usize, String)>, String> {
    for (index, example) in examples.iter().enumerate() {
        if example.id.trim().is_empty() {
            return Err(format!("example {} (counting from 1) has an empty id", index + 1));
        }
        let which = format!("example `{}`", example.id);
        match &example.prompt {
            Prompt::Text(text) if text.trim().is_empty() => {
                return Err(format!("{which} has an empty question"))
            }
            Prompt::Messages(messages) if messages.is_empty() => {
                return Err(format!("{which} has an empty list of messages"))
            }
            _ => {}
        }
        let mut keys = HashSet::new();
        for option in &example.options {
            if option.key.trim().is_empty() {
                return Err(format!("{which} has an option with an empty key"));
            }
            if !keys.insert(option.key.as_str()) {
                return Err(format!("{which} has two options keyed `{}`", option.key));
            }
        }
        if let Some(answer) = &example.answer {
            if !example.options.is_empty() && !keys.contains(answer.as_str()) {
                let keys: Vec<&str> = example.options.iter().map(|o| o.key.as_str()).collect();
                return Err(format!(
                    "{which}'s gold answer `{answer}` is not one of its option keys ({})",
                    keys.join(", ")
                ));
            }
        }
    }
    Ok(repeated_ids(examples))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crpo_sdk::AnswerOption;

    fn example(id: &str, question: &str, keys: &[&str], answer: Option<&str>) -> Example {
        Example {
            id: id.into(),
            prompt: Prompt::Text(question.into()),
            answer: answer.map(String::from),
            options: keys
                .iter()
                .map(|key| AnswerOption {
                    key: key.to_string(),
                    text: format!("option {key}"),
                })
                .collect(),
            ..Example::default()
        }
    }

    #[test]
    fn a_column_some_records_lack_is_null_in_theirs() {
        let mut examples = vec![example("q1", "Q?", &[], None), example("q2", "Q?", &[], None)];
        examples[0].metadata.insert("solution".into(), "120".into());
        examples[1].metadata.insert("source".into(), "ward".into());
        fill_missing_columns(&mut examples);
        assert_eq!(examples[0].metadata["source"], serde_json::Value::Null);
        assert_eq!(examples[1].metadata["solution"], serde_json::Value::Null);
        assert_eq!(examples[0].metadata["solution"], "120");
    }

    #[test]
    fn examples_no_run_can_use_are_named_and_repeated_ids_counted() {
        let good = example("q1", "Chest pain?", &["A", "B"], Some("B"));
        assert_eq!(check_examples(std::slice::from_ref(&good)), Ok(None));
        // Free text: no options, any gold; prompt-only data: no gold.
        let free = example("q2", "Dose?", &[], Some("5 mg"));
        let unlabelled = example("q3", "Why?", &["A"], None);
        assert_eq!(check_examples(&[good.clone(), free, unlabelled]), Ok(None));
        for (bad, says) in [
            (
                example(" ", "Q?", &["A"], Some("A")),
                "example 2 (counting from 1) has an empty id",
            ),
            (
                example("q9", "  ", &["A"], Some("A")),
                "example `q9` has an empty question",
            ),
            (
                example("q9", "Q?", &["A", "A"], Some("A")),
                "two options keyed `A`",
            ),
            (
                example("q9", "Q?", &["A", ""], Some("A")),
                "an option with an empty key",
            ),
            (
                example("q9", "Q?", &["A", "B"], Some("Z")),
                "gold answer `Z` is not one of its option keys (A, B)",
            ),
        ] {
            let why = check_examples(&[good.clone(), bad]).unwrap_err();
            assert!(why.contains(says), "{why}");
        }
        let messages = Example {
            prompt: Prompt::Messages(Vec::new()),
            ..example("q9", "", &[], None)
        };
        assert!(check_examples(&[messages])
            .unwrap_err()
            .contains("empty list of messages"));
        let repeated = [good.clone(), good.clone(), good];
        assert_eq!(check_examples(&repeated), Ok(Some((2, "q1".into()))));
    }
}
