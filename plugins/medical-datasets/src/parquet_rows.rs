//! Parquet files as records: each row as the JSON object the readers already parse (struct
//! columns become objects, lists arrays, nulls `null`), numbered from 1 as a line would be.
//! Hugging Face stores datasets this way (`…/train-00000-of-00001.parquet`).

use crate::records::{unreadable, Records};
use crpo_sdk::PluginError;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};
use serde_json::{Map, Value};
use std::fs::File;
use std::path::Path;

/// Whether `path` names a Parquet file (by its extension).
pub fn is_parquet(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

/// Every row of the file. A file that is not Parquet fails naming it; a row that cannot be
/// decoded becomes a malformed record at its row.
pub fn read_rows(path: &Path) -> Result<Records, PluginError> {
    let fail = |e: &dyn std::fmt::Display| PluginError::failed(format!("{}: {e}", path.display()));
    let file = File::open(path).map_err(|e| fail(&format!("cannot read: {e}")))?;
    let reader =
        SerializedFileReader::new(file).map_err(|e| fail(&format!("not a readable Parquet file: {e}")))?;
    // A corrupt page can decode to rows without end: no more than the footer declares are read.
    let declared = usize::try_from(reader.metadata().file_metadata().num_rows()).unwrap_or(0);
    let mut records = Vec::with_capacity(declared.min(1 << 20));
    for (index, row) in reader.into_iter().enumerate() {
        if index == declared {
            return Err(fail(&format!(
                "not a readable Parquet file: its pages decode to more rows than the {declared} its footer declares (the file is corrupt)"
            )));
        }
        let record = row
            .map_err(|e| {
                // The library's message can carry a page of raw bytes: the start says what failed.
                let message = e.to_string();
                match message.char_indices().nth(200) {
                    Some((cut, _)) => format!("unreadable Parquet row: {}…", &message[..cut]),
                    None => format!("unreadable Parquet row: {message}"),
                }
            })
            .and_then(|row| row_json(&row));
        records.push((index + 1, record));
    }
    Ok(records)
}

/// A row as JSON, as a JSONL line of it would read: text stored as binary is text, and a
/// NaN or infinite number or binary data (which no JSON line holds) becomes an
/// [`unreadable`](crate::records::unreadable) marker, never a silent `null` (a NaN gold answer
/// would read as none): the row is malformed, naming the column, if the reader uses it.
fn row_json(row: &Row) -> Result<Value, String> {
    row.get_column_iter()
        .map(|(name, field)| {
            Ok((
                name.clone(),
                field_json(field).map_err(|why| format!("column `{name}`: {why}"))?,
            ))
        })
        .collect::<Result<Map<String, Value>, String>>()
        .map(Value::Object)
}

fn field_json(field: &Field) -> Result<Value, String> {
    let not_json = |x: &dyn std::fmt::Display| unreadable(&format!("{x} is not a number JSON can hold"));
    Ok(match field {
        Field::Float(x) if !x.is_finite() => not_json(x),
        Field::Double(x) if !x.is_finite() => not_json(x),
        Field::Float16(x) if !x.is_finite() => not_json(x),
        Field::Bytes(bytes) => match std::str::from_utf8(bytes.data()) {
            Ok(text) => Value::String(text.to_string()),
            Err(_) => unreadable("binary data, not text"),
        },
        Field::Group(row) => row_json(row)?,
        Field::ListInternal(list) => {
            Value::Array(list.elements().iter().map(field_json).collect::<Result<_, _>>()?)
        }
        Field::MapInternal(map) => {
            let mut object = Map::new();
            for (key, value) in map.entries() {
                let key = match field_json(key)? {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                object.insert(key, field_json(value)?);
            }
            Value::Object(object)
        }
        other => other.to_json_value(),
    })
}
