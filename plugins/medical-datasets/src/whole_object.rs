//! A dataset file that is one JSON object rather than records a line: pandas' `to_json`
//! layouts (its default for a DataFrame, `orient="columns"`, and `"index"`, `"split"`,
//! `"table"`), or one record written over several lines. Hugging Face's `load_dataset("json")`
//! falls back to `pandas.read_json` for such a file, so a user expects it read, not a
//! "`question`: not a string" for a column holding every row's question.

use serde_json::{Map, Value};

/// The records of `object`, the whole file, each with its line (`member_lines` gives the line
/// of each member's value, for the `index` layout's records, and is only worked out for them;
/// the others are placed on line 1 and told apart as `file:1#N`).
pub fn records_of(
    object: Map<String, Value>,
    member_lines: impl FnOnce() -> Vec<usize>,
) -> Vec<(usize, Value)> {
    if let Some(rows) = split_layout(&object) {
        return rows.into_iter().map(|row| (1, row)).collect();
    }
    if let Some(rows) = table_layout(&object) {
        return rows.into_iter().map(|row| (1, row)).collect();
    }
    if let Some(rows) = columns_layout(&object) {
        return rows.into_iter().map(|row| (1, row)).collect();
    }
    if index_layout(&object) {
        let member_lines = member_lines();
        return object
            .into_iter()
            .enumerate()
            .map(|(i, (_, record))| (member_lines.get(i).copied().unwrap_or(1), record))
            .collect();
    }
    vec![(1, Value::Object(object))]
}

/// A row label as pandas writes a default index: `"0"`, `"1"`, …
fn is_label(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit())
}

/// `{"columns": [...], "index": [...], "data": [[...], ...]}`.
fn split_layout(object: &Map<String, Value>) -> Option<Vec<Value>> {
    if !object
        .keys()
        .all(|k| ["columns", "index", "data"].contains(&k.as_str()))
    {
        return None;
    }
    let columns: Vec<&str> = object
        .get("columns")?
        .as_array()?
        .iter()
        .map(Value::as_str)
        .collect::<Option<_>>()?;
    let data = object.get("data")?.as_array()?;
    data.iter()
        .map(|row| {
            let cells = row.as_array().filter(|cells| cells.len() == columns.len())?;
            Some(Value::Object(
                columns
                    .iter()
                    .map(|c| c.to_string())
                    .zip(cells.iter().cloned())
                    .collect(),
            ))
        })
        .collect()
}

/// `{"schema": {...}, "data": [{...}, ...]}` (the index is a column of each record).
fn table_layout(object: &Map<String, Value>) -> Option<Vec<Value>> {
    if object.len() != 2 || !object.get("schema")?.is_object() {
        return None;
    }
    let data = object.get("data")?.as_array()?;
    data.iter().all(Value::is_object).then(|| data.clone())
}

/// `{"question": {"0": ..., "1": ...}, "answer_idx": {"0": ..., "1": ...}}`: every member an
/// object keyed by the same row labels. A row lacking a column has it as null, as pandas reads it.
fn columns_layout(object: &Map<String, Value>) -> Option<Vec<Value>> {
    let columns: Vec<(&String, &Map<String, Value>)> = object
        .iter()
        .map(|(name, column)| Some((name, column.as_object()?)))
        .collect::<Option<_>>()?;
    let (_, first) = columns.first()?;
    let labels: Vec<&String> = first.keys().collect();
    if labels.is_empty() || !labels.iter().all(|l| is_label(l)) {
        return None;
    }
    if !columns
        .iter()
        .all(|(_, column)| column.keys().all(|l| first.contains_key(l)))
    {
        return None;
    }
    Some(
        labels
            .iter()
            .map(|label| {
                Value::Object(
                    columns
                        .iter()
                        .map(|(name, column)| {
                            (
                                (*name).clone(),
                                column.get(*label).cloned().unwrap_or(Value::Null),
                            )
                        })
                        .collect(),
                )
            })
            .collect(),
    )
}

/// `{"0": {...record...}, "1": {...}}`: row labels, each naming a record.
fn index_layout(object: &Map<String, Value>) -> bool {
    !object.is_empty()
        && object
            .iter()
            .all(|(label, record)| is_label(label) && record.is_object())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(value: Value) -> Vec<Value> {
        let Value::Object(object) = value else { panic!() };
        records_of(object, Vec::new)
            .into_iter()
            .map(|(_, row)| row)
            .collect()
    }

    fn expected() -> Vec<Value> {
        vec![
            json!({"question": "Q1?", "options": {"A": "flu", "B": "cold"}, "answer_idx": "A"}),
            json!({"question": "Q2?", "options": {"A": "x", "B": "y"}, "answer_idx": "B"}),
        ]
    }

    /// Each as `pandas.DataFrame(records).to_json(orient=…)` writes it.
    #[test]
    fn pandas_layouts_give_the_records() {
        let columns = json!({
            "question": {"0": "Q1?", "1": "Q2?"},
            "options": {"0": {"A": "flu", "B": "cold"}, "1": {"A": "x", "B": "y"}},
            "answer_idx": {"0": "A", "1": "B"}
        });
        assert_eq!(rows(columns), expected());
        let index = json!({
            "0": {"question": "Q1?", "options": {"A": "flu", "B": "cold"}, "answer_idx": "A"},
            "1": {"question": "Q2?", "options": {"A": "x", "B": "y"}, "answer_idx": "B"}
        });
        assert_eq!(rows(index), expected());
        let split = json!({
            "columns": ["question", "options", "answer_idx"],
            "index": [0, 1],
            "data": [["Q1?", {"A": "flu", "B": "cold"}, "A"], ["Q2?", {"A": "x", "B": "y"}, "B"]]
        });
        assert_eq!(rows(split), expected());
        let table = json!({
            "schema": {"fields": [{"name": "question", "type": "string"}], "pandas_version": "1.4.0"},
            "data": expected()
        });
        assert_eq!(rows(table), expected());
    }

    #[test]
    fn a_column_without_a_row_s_label_is_null_there() {
        let columns = json!({"question": {"0": "Q1?", "1": "Q2?"}, "answer": {"1": "B"}});
        assert_eq!(
            rows(columns),
            vec![
                json!({"question": "Q1?", "answer": null}),
                json!({"question": "Q2?", "answer": "B"})
            ]
        );
        // A column with a label the first lacks is no pandas layout: one record.
        let other = json!({"question": {"0": "Q1?"}, "answer": {"5": "B"}});
        assert_eq!(rows(other.clone()), vec![other]);
    }

    #[test]
    fn anything_else_is_one_record() {
        let record = json!({"question": "Q1?", "options": {"A": "flu"}, "answer_idx": "A"});
        assert_eq!(rows(record.clone()), vec![record]);
        let conversation = json!({"messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(rows(conversation.clone()), vec![conversation]);
        let nested = json!({"meta": {"source": "x"}, "options": {"A": "a"}});
        assert_eq!(rows(nested.clone()), vec![nested], "keys that are no row labels");
    }
}
