//! Reading a file of records: JSONL (one object a line), a whole-file JSON array of objects
//! (as `datasets` exports save them too), a whole-file object (pandas' `to_json` layouts,
//! `whole_object`), or Parquet (`.parquet`: how Hugging Face stores
//! datasets; a record's "line" is then its 1-based row). Each record goes through a parser;
//! a bad one becomes a malformed entry with file, line and field.

use crate::FieldError;
use crpo_sdk::{AnswerOption, DatasetRead, Example, PluginError, RecordError};
use serde_json::{Map, Value};
use std::path::Path;

/// A file's records, each with the line (row, for Parquet) it starts on.
pub type Records = Vec<(usize, Result<Value, String>)>;

/// Reads `path` and parses each record with `parse(record, id)`.
pub fn read_records(
    path: &Path,
    parse: impl FnMut(&Map<String, Value>, &str) -> Result<Example, FieldError>,
) -> Result<DatasetRead, PluginError> {
    Ok(parse_records(
        &path.display().to_string(),
        file_records(path)?,
        parse,
    ))
}

/// The records of a Parquet, JSONL or JSON-array file.
pub fn file_records(path: &Path) -> Result<Records, PluginError> {
    if crate::parquet_rows::is_parquet(path) {
        crate::parquet_rows::read_rows(path)
    } else {
        Ok(records(&read_text(path)?))
    }
}

/// A dataset file's whole text; a byte that is not UTF-8 is named by its line and column.
pub fn read_text(path: &Path) -> Result<String, PluginError> {
    let bytes = std::fs::read(path)
        .map_err(|e| PluginError::failed(format!("cannot read {}: {e}", path.display())))?;
    if let Some(what) = other_format(path, &bytes) {
        return Err(PluginError::failed(format!("{}: {what}", path.display())));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        let line_start = bytes[..at].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        PluginError::failed(format!(
            "{}: line {line} is not UTF-8 text (byte 0x{:02x} at column {}); save the file as UTF-8",
            path.display(),
            bytes[at],
            at - line_start + 1
        ))
    })?;
    // A byte-order mark (Windows editors write one) is not part of the first record.
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    };
    // Classic Mac line endings (CR alone): JSON holds no raw CR inside a string, so each CR
    // ends a line.
    Ok(if !text.contains('\n') && text.contains('\r') {
        text.replace('\r', "\n")
    } else {
        text
    })
}

/// What a file that is not JSON text is, by its first bytes (or a CSV by its name), and what to
/// do: the UTF-8 check would say only "not UTF-8", the parser only "invalid JSON".
fn other_format(path: &Path, bytes: &[u8]) -> Option<String> {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    let utf16 = starts(&[0xff, 0xfe])
        || starts(&[0xfe, 0xff])
        || (bytes.len() >= 4 && (bytes[1] == 0 && bytes[3] == 0 || bytes[0] == 0 && bytes[2] == 0));
    let what = if starts(&[0x1f, 0x8b]) {
        "is gzip-compressed: decompress it first (gunzip -k FILE)"
    } else if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "is zstd-compressed: decompress it first (zstd -d FILE)"
    } else if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        "is xz-compressed: decompress it first (xz -dk FILE)"
    } else if starts(b"BZh") {
        "is bzip2-compressed: decompress it first (bunzip2 -k FILE)"
    } else if starts(b"PK\x03\x04") {
        "is a zip archive (or a spreadsheet): extract or export the JSON Lines file from it"
    } else if starts(b"PAR1") {
        "is a Parquet file: name it with the .parquet extension to read it as Parquet"
    } else if utf16 {
        "is UTF-16 text: save it as UTF-8"
    } else if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv") || e.eq_ignore_ascii_case("tsv"))
        && !String::from_utf8_lossy(&bytes[..bytes.len().min(64)])
            .trim_start_matches('\u{feff}')
            .trim_start()
            .starts_with(['{', '['])
    {
        "is CSV, which is not read: convert it to JSON Lines (pandas: \
         pd.read_csv(FILE).to_json(OUT, orient=\"records\", lines=True)) or Parquet"
    } else {
        return None;
    };
    Some(what.to_string())
}

/// Parses each record (read from `file_name`) with `parse(record, id)`.
pub fn parse_records(
    file_name: &str,
    records: Records,
    mut parse: impl FnMut(&Map<String, Value>, &str) -> Result<Example, FieldError>,
) -> DatasetRead {
    let mut read = DatasetRead::default();
    // Records that share a line (a JSON array written on one line, as pandas and datasets
    // write it) are told apart by their place on it: `file:1#3`.
    let mut per_line: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    for (line_no, _) in &records {
        *per_line.entry(*line_no).or_default() += 1;
    }
    let mut seen_on_line: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    for (line_no, record) in records {
        let place = seen_on_line.entry(line_no).or_default();
        *place += 1;
        let shared = per_line[&line_no] > 1;
        let (id, which) = if shared {
            (
                format!("{file_name}:{line_no}#{place}"),
                format!("record {place} of the line: "),
            )
        } else {
            (format!("{file_name}:{line_no}"), String::new())
        };
        let malformed = |field: String, message: String| RecordError {
            file: file_name.to_string(),
            line: line_no,
            field,
            message: format!("{which}{message}"),
        };
        match record {
            Ok(Value::Object(record)) => match parse(&record, &id) {
                Ok(mut example) => {
                    // Columns no reader used: an image, a hash, a NaN score.
                    example.metadata.retain(|_, value| unreadable_in(value).is_none());
                    read.examples.push(example)
                }
                Err((field, message)) => {
                    // A field the reader could not read may be a value no JSON holds.
                    let column = field.split(['.', '[']).next().unwrap_or(&field).to_string();
                    let message = match record.get(&column).and_then(unreadable_in) {
                        Some(why) => format!("column `{column}`: {why}"),
                        None => message,
                    };
                    read.malformed.push(malformed(field, message))
                }
            },
            Ok(_) => read
                .malformed
                .push(malformed("record".into(), "not a JSON object".into())),
            Err(message) => read.malformed.push(malformed("record".into(), message)),
        }
    }
    read
}

/// The key of the marker a value no JSON line holds (a Parquet NaN, binary data) leaves in
/// its record: malformed when a reader uses it, dropped from the metadata when none does.
const UNREADABLE: &str = "crpo:unreadable";

/// The marker for a value that cannot be read as JSON, and why.
pub fn unreadable(why: &str) -> Value {
    Value::Object(Map::from_iter([(
        UNREADABLE.to_string(),
        Value::String(why.to_string()),
    )]))
}

/// Why `value` (or a value inside it) could not be read, if it holds a marker.
fn unreadable_in(value: &Value) -> Option<&str> {
    match value {
        Value::Object(fields) => match fields.get(UNREADABLE) {
            Some(why) => why.as_str(),
            None => fields.values().find_map(unreadable_in),
        },
        Value::Array(items) => items.iter().find_map(unreadable_in),
        _ => None,
    }
}

/// The records of a JSONL text or a JSON array, each with the line it starts on.
pub fn records(text: &str) -> Records {
    if text.trim_start().starts_with('[') {
        return match from_json::<Vec<UniqueKeys>>(text) {
            Ok(values) => {
                let starts = array_element_lines(text);
                values
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (starts.get(i).copied().unwrap_or(1), Ok(v.0)))
                    .collect()
            }
            Err(e) => vec![(e.line(), Err(format!("invalid JSON: {e}")))],
        };
    }
    if is_one_object(text) {
        return match from_json::<UniqueKeys>(text) {
            Ok(UniqueKeys(Value::Object(object))) => {
                crate::whole_object::records_of(object, || member_value_lines(text))
                    .into_iter()
                    .map(|(line, record)| (line, Ok(record)))
                    .collect()
            }
            Ok(UniqueKeys(other)) => vec![(1, Ok(other))],
            Err(e) => vec![(e.line(), Err(format!("invalid JSON: {e}")))],
        };
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let parsed = from_json::<UniqueKeys>(line).map(|v| v.0);
            (i + 1, parsed.map_err(|e| format!("invalid JSON: {e}")))
        })
        .collect()
}

/// Whether `text` is one JSON object and nothing after it (a pandas `to_json` file, or one
/// record over several lines), not JSONL: the scan stops at the second record's first brace.
fn is_one_object(text: &str) -> bool {
    let mut level = 0usize;
    let mut closed = false;
    for (_, c) in structure(text) {
        if c.is_whitespace() {
            continue;
        }
        if closed {
            return false;
        }
        match c {
            '{' | '[' => level += 1,
            '}' | ']' => {
                level = level.saturating_sub(1);
                closed = level == 0;
            }
            _ if level == 0 => return false,
            _ => {}
        }
    }
    closed && text.trim_start().starts_with('{')
}

/// `text` as JSON; Python's `NaN` and `±Infinity`, which json.dumps writes by default, read as
/// null, as pandas writes them (a NaN gold is then no gold, like a Parquet NaN). The error is
/// the strict parse's.
fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    serde_json::from_str(text).or_else(|error| {
        python_numbers_as_null(text)
            .and_then(|text| serde_json::from_str(&text).ok())
            .ok_or(error)
    })
}

/// `line` with Python's `NaN`, `Infinity` and `-Infinity` outside strings as `null`; `None`
/// when it has none.
fn python_numbers_as_null(line: &str) -> Option<String> {
    let (mut out, mut strings, mut changed) = (String::with_capacity(line.len()), Strings::default(), false);
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        let token = strings.outside(c).then(|| {
            ["-Infinity", "Infinity", "NaN"]
                .into_iter()
                .find(|t| rest.starts_with(t))
        });
        if let Some(token) = token.flatten() {
            out.push_str("null");
            rest = &rest[token.len()..];
            changed = true;
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    changed.then_some(out)
}

/// Where a scan of a JSON text is: inside a string (after an escape) or not.
#[derive(Default)]
struct Strings {
    inside: bool,
    escaped: bool,
}

impl Strings {
    /// Takes the next character: whether it is outside every string (a string's opening
    /// quote counts as outside, its closing one as inside).
    fn outside(&mut self, c: char) -> bool {
        if self.inside {
            match (self.escaped, c) {
                (true, _) => self.escaped = false,
                (false, '\\') => self.escaped = true,
                (false, '"') => self.inside = false,
                _ => {}
            }
            return false;
        }
        self.inside = c == '"';
        true
    }
}

/// The characters of a JSON text outside its strings (a string's opening quote included), each
/// with its 1-based line.
fn structure(text: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let (mut line, mut strings) = (1, Strings::default());
    text.chars().filter_map(move |c| {
        let at = line;
        if c == '\n' {
            line += 1;
        }
        strings.outside(c).then_some((at, c))
    })
}

/// 1-based lines where each element of the top-level JSON array starts (an object or any other
/// value: a stray string or number must not shift the lines of the records after it).
pub fn array_element_lines(text: &str) -> Vec<usize> {
    let (mut lines, mut level, mut expecting) = (Vec::new(), 0usize, false);
    for (line, c) in structure(text) {
        if level == 1 && expecting && !c.is_whitespace() && c != ']' {
            lines.push(line);
            expecting = false;
        }
        match c {
            '{' | '[' => {
                level += 1;
                expecting = level == 1;
            }
            '}' | ']' => level = level.saturating_sub(1),
            ',' if level == 1 => expecting = true,
            _ => {}
        }
    }
    lines
}

/// 1-based lines where each member's value of the top-level JSON object starts (an object or
/// any other value: a stray `null` must not shift the lines of the members after it).
pub fn member_value_lines(text: &str) -> Vec<usize> {
    let (mut lines, mut level, mut expecting) = (Vec::new(), 0usize, false);
    for (line, c) in structure(text) {
        if level == 1 && expecting && !c.is_whitespace() {
            lines.push(line);
            expecting = false;
        }
        match c {
            '{' | '[' => level += 1,
            '}' | ']' => level = level.saturating_sub(1),
            ':' if level == 1 => expecting = true,
            _ => {}
        }
    }
    lines
}

/// A JSON object's members in file order, a repeated key kept (serde_json's maps keep the
/// last in silence: a PMID given twice lost its first question).
pub struct Members(pub Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// A JSON value in which no object gives one key twice: serde_json keeps the last in silence,
/// so `"answer_idx": "B", …, "answer_idx": "A"` read as A.
pub struct UniqueKeys(pub Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::from(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::from(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::from(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::String(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::String(v)))
            }
            fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::Null))
            }
            fn visit_none<E>(self) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
                let mut items = Vec::new();
                while let Some(UniqueKeys(item)) = seq.next_element()? {
                    items.push(item);
                }
                Ok(UniqueKeys(Value::Array(items)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
                let mut fields = Map::new();
                while let Some((key, UniqueKeys(value))) = map.next_entry::<String, UniqueKeys>()? {
                    if fields.contains_key(&key) {
                        return Err(serde::de::Error::custom(format!(
                            "key `{key}` is given twice in one object (which is meant?)"
                        )));
                    }
                    fields.insert(key, value);
                }
                Ok(UniqueKeys(Value::Object(fields)))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A string field of a record.
pub fn string_field<'a>(record: &'a Map<String, Value>, field: &str) -> Result<&'a str, FieldError> {
    match record.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err((field.into(), "not a string".into())),
        None => Err((field.into(), "missing".into())),
    }
}

/// A record's question: a string with words in it (an empty one is no example: malformed, so
/// counted and skippable like any other record).
pub fn question_field<'a>(record: &'a Map<String, Value>, field: &str) -> Result<&'a str, FieldError> {
    let question = string_field(record, field)?;
    if question.trim().is_empty() {
        return Err((field.into(), "empty".into()));
    }
    Ok(question)
}

/// The options of a record's `field` holding an object of key → text, sorted by key. A null
/// text is no option (a Parquet struct column of 4- and 5-option questions has `E: null`).
pub fn options_from_object(
    record: &Map<String, Value>,
    field: &str,
) -> Result<Vec<AnswerOption>, FieldError> {
    let listed;
    let raw = match record.get(field) {
        Some(Value::Object(raw)) => raw,
        Some(value) if key_value_list(value).is_some() => {
            listed = key_value_list(value).unwrap_or_default();
            &listed
        }
        _ => {
            return Err((
                field.into(),
                "missing or not an object of letter → text (or a list of {\"key\", \"value\"})".into(),
            ))
        }
    };
    let mut options = raw
        .iter()
        .filter(|(_, text)| !text.is_null())
        .map(|(key, text)| {
            // The answer is an option's letter (`\boxed{B}`): another key could never be
            // answered, and keys like "1", "10" would sort as text.
            if !(key.len() == 1 && key.as_bytes()[0].is_ascii_uppercase()) {
                return Err((
                    format!("{field}.{key}"),
                    "option keys are capital letters A–Z (the answer is an option's letter): re-key the options, or give them as a list (keyed A, B, … in order)".to_string(),
                ));
            }
            option(format!("{field}.{key}"), key.clone(), text)
        })
        .collect::<Result<Vec<_>, _>>()?;
    options.sort_by(|a, b| a.key.cmp(&b.key));
    if options.is_empty() {
        return Err((field.into(), NO_OPTIONS.into()));
    }
    Ok(options)
}

/// BigBio's layout of MedQA's options (and a Parquet map column's): a list of
/// `{"key": "A", "value": text}`, as an object of key → text.
pub fn key_value_list(value: &Value) -> Option<Map<String, Value>> {
    value
        .as_array()?
        .iter()
        .map(|item| {
            let item = item.as_object()?;
            Some((item.get("key")?.as_str()?.to_string(), item.get("value")?.clone()))
        })
        .collect()
}

const NO_OPTIONS: &str =
    "no options: a multiple-choice question needs at least one (leave the field out for a free-text answer)";

/// An option keyed `key` from its `text`, which must be a non-empty string (`at` names it).
fn option(at: String, key: String, text: &Value) -> Result<AnswerOption, FieldError> {
    match text.as_str() {
        Some(text) if !text.trim().is_empty() => Ok(AnswerOption {
            key,
            text: text.to_string(),
        }),
        Some(_) => Err((at, "an empty option text".to_string())),
        None => Err((at, "not a string".to_string())),
    }
}

/// The options of a record's optional `field`: none when it is absent or null, an object of
/// key → text ([`options_from_object`]), or a list of at most 26 texts keyed A, B, C, … in order.
pub fn optional_options(record: &Map<String, Value>, field: &str) -> Result<Vec<AnswerOption>, FieldError> {
    match record.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(_)) => options_from_object(record, field),
        Some(Value::Array(items)) if items.is_empty() => Err((field.into(), NO_OPTIONS.into())),
        Some(Value::Array(items)) if items.len() > 26 => Err((
            field.into(),
            format!("{} options: at most 26, keyed A–Z", items.len()),
        )),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, text)| option(format!("{field}[{i}]"), letter(i), text))
            .collect(),
        Some(_) => Err((field.into(), "not an object or a list of option texts".into())),
    }
}

/// An integer as JSON or a data frame writes one: a number (`1`, or `1.0` from a column that
/// pandas made float by a missing value) or a numeral string.
pub fn integer_value(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The record's id from its `field` (a string or a number) when one is named and present,
/// else `fallback` (the record's file:line).
pub fn record_id(record: &Map<String, Value>, field: Option<&str>, fallback: &str) -> String {
    match field.and_then(|f| record.get(f)) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => fallback.to_string(),
    }
}

/// The record without the fields a parser consumed: the example's metadata.
pub fn metadata_without(record: &Map<String, Value>, consumed: &[&str]) -> Map<String, Value> {
    let mut metadata = record.clone();
    for key in consumed {
        metadata.remove(*key);
    }
    metadata
}

/// Option keys for a list of options: A, B, C, …
pub fn letter(index: usize) -> String {
    assert!(index < 26, "option {index} has no letter: callers allow 26");
    char::from(b'A' + index as u8).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value no JSON holds (a Parquet image column, a NaN) spoils only the records whose
    /// reader uses it, and is named with its column there.
    #[test]
    fn an_unreadable_value_is_malformed_only_where_it_is_used() {
        let row = |question: Value| {
            Ok(Value::Object(Map::from_iter([
                ("question".to_string(), question),
                ("image".to_string(), unreadable("binary data, not text")),
            ])))
        };
        let records = vec![
            (1, row(Value::String("Q?".into()))),
            (2, row(unreadable("binary data, not text"))),
        ];
        let read = parse_records("f.parquet", records, |record, id| {
            Ok(Example {
                id: id.to_string(),
                prompt: crpo_sdk::Prompt::Text(string_field(record, "question")?.to_string()),
                metadata: metadata_without(record, &["question"]),
                ..Example::default()
            })
        });
        assert_eq!(read.examples.len(), 1);
        assert!(
            read.examples[0].metadata.is_empty(),
            "the unused column is dropped"
        );
        let bad = &read.malformed[0];
        assert_eq!((bad.line, bad.field.as_str()), (2, "question"));
        assert_eq!(bad.message, "column `question`: binary data, not text");
    }

    /// A JSON array on one line (pandas' and datasets' `to_json` without `lines`): each record
    /// its own id and place; an empty question is a malformed record, not the whole file's end.
    #[test]
    fn records_sharing_a_line_are_told_apart_and_an_empty_question_is_malformed() {
        let text = r#"[{"question": "Q1?"}, {"question": "  "}, {"question": "Q3?"}]"#;
        let read = parse_records("a.json", records(text), |record, id| {
            Ok(Example {
                id: id.to_string(),
                prompt: crpo_sdk::Prompt::Text(question_field(record, "question")?.to_string()),
                ..Example::default()
            })
        });
        let ids: Vec<&str> = read.examples.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a.json:1#1", "a.json:1#3"]);
        let bad = &read.malformed[0];
        assert_eq!((bad.line, bad.field.as_str()), (1, "question"));
        assert_eq!(bad.message, "record 2 of the line: empty");
    }

    #[test]
    fn a_key_given_twice_in_one_object_is_invalid_at_any_depth() {
        let line = r#"{"answer_idx": "B", "q": {"a": 1}, "answer_idx": "A"}"#;
        let error = records(line)[0].1.clone().unwrap_err();
        assert!(error.contains("key `answer_idx` is given twice"), "{error}");
        let nested = r#"[{"options": {"A": "x", "A": "y"}}]"#;
        assert!(records(nested)[0].1.clone().unwrap_err().contains("key `A`"));
        let fine = r#"{"a": [1, -2, 2.5, true, null, "s", {"b": {}}]}"#;
        assert_eq!(
            records(fine)[0].1.clone().unwrap(),
            serde_json::from_str::<Value>(fine).unwrap()
        );
    }

    #[test]
    fn python_s_nan_and_infinity_read_as_null_outside_strings() {
        let line = r#"{"a": NaN, "b": -Infinity, "c": "NaN \" Infinity", "d": [Infinity]}"#;
        let parsed = &records(line)[0].1;
        assert_eq!(
            parsed.as_ref().unwrap(),
            &serde_json::json!({"a": null, "b": null, "c": "NaN \" Infinity", "d": [null]})
        );
        assert!(records("{\"a\": nan}")[0].1.is_err(), "only Python's spelling");
    }

    #[test]
    fn jsonl_and_json_arrays_give_records_with_their_lines() {
        let jsonl = "{\"a\": 1}\n\n{\"a\": 2}\nnot json\n";
        let lines: Vec<usize> = records(jsonl).iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![1, 3, 4]);
        assert!(records(jsonl)[2].1.is_err());
        let array = "[\n  {\"a\": \"{\"},\n  {\"a\": {\"b\": 2}}\n]";
        let parsed = records(array);
        assert_eq!(parsed.iter().map(|(l, _)| *l).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(parsed[1].1.as_ref().unwrap()["a"]["b"], 2);
        // Elements that are not objects keep their own lines, and the records after them theirs.
        let mixed = "[\n{\"a\": 1},\n\"str\",\n[1, 2],\n{\"a\": \"]\"},\nnull,\n{\"a\": 3}\n]";
        let lines: Vec<usize> = records(mixed).iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn a_whole_file_object_is_read_as_pandas_writes_it_or_as_one_record() {
        // pandas' default `to_json` for a DataFrame: on one line, a column per field.
        let columns = r#"{"question":{"0":"Q1?","1":"Q2?"},"answer_idx":{"0":"A","1":NaN}}"#;
        let parsed = records(columns);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].1.as_ref().unwrap()["question"], "Q2?");
        assert!(
            parsed[1].1.as_ref().unwrap()["answer_idx"].is_null(),
            "NaN as null"
        );
        // `orient="index"` over several lines: each record on its own line.
        let index = "{\n \"0\": {\"question\": \"Q1?\"},\n \"1\": {\"question\": \"Q2?\"}\n}\n";
        let lines: Vec<usize> = records(index).iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![2, 3]);
        // One record written over several lines.
        let pretty = "{\n  \"question\": \"Q1?\",\n  \"options\": {\"A\": \"x\"}\n}";
        let parsed = records(pretty);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].1.as_ref().unwrap()["options"]["A"], "x");
        // Its error is the whole object's, where the parser found it (not line 1's "EOF").
        let twice = "{\n  \"a\": 1,\n  \"a\": 2\n}";
        let parsed = records(twice);
        assert!(parsed[0].0 >= 3, "{parsed:?}");
        assert!(
            parsed[0].1.as_ref().unwrap_err().contains("`a` is given twice"),
            "{parsed:?}"
        );
        // JSONL stays JSONL, however its first record looks.
        let jsonl = "{\"0\": {\"question\": \"Q1?\"}}\n{\"0\": {\"question\": \"Q2?\"}}\n";
        assert_eq!(records(jsonl).len(), 2);
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        std::fs::write(&path, "\u{feff}{\"a\": 1}\n").unwrap();
        let parsed = records(&read_text(&path).unwrap());
        assert_eq!(parsed[0].1.as_ref().unwrap()["a"], 1);
    }

    /// Compressed, UTF-16, zipped and CSV files say what they are and what to do.
    #[test]
    fn files_in_other_formats_say_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let error = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            read_text(&path).unwrap_err().to_string()
        };
        let utf16: Vec<u8> = "{\"a\": 1}\n".encode_utf16().flat_map(u16::to_le_bytes).collect();
        for (name, bytes, says) in [
            ("train.jsonl.gz", &[0x1f, 0x8b, 8, 0][..], "gzip"),
            ("train.jsonl", &[0x28, 0xb5, 0x2f, 0xfd, 0][..], "zstd"),
            ("train.jsonl", &b"PK\x03\x04rest"[..], "zip"),
            ("train.jsonl", &b"PAR1rest"[..], ".parquet"),
            ("train.jsonl", &utf16[..], "UTF-16"),
            ("train.jsonl", &[0xff, 0xfe, b'{', 0][..], "UTF-16"),
            ("train.csv", &b"question,answer\nWhich?,B\n"[..], "CSV"),
        ] {
            let message = error(name, bytes);
            assert!(
                message.contains(name) && message.contains(says),
                "{name}: {message}"
            );
        }
        // A .csv that holds JSON Lines is read as such.
        let path = dir.path().join("lines.csv");
        std::fs::write(&path, "{\"a\": 1}\n").unwrap();
        assert!(read_text(&path).is_ok());
    }

    #[test]
    fn lines_ended_by_carriage_returns_alone_are_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        std::fs::write(&path, "{\"a\": 1}\r{\"a\": 2}\r").unwrap();
        let parsed = records(&read_text(&path).unwrap());
        assert_eq!(parsed.iter().map(|(l, _)| *l).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(parsed[1].1.as_ref().unwrap()["a"], 2);
    }

    #[test]
    fn a_byte_that_is_not_utf8_is_named_by_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        std::fs::write(&path, b"{\"a\": 1}\n{\"a\": 2}\n{\"q\": \"caf\xe9\"}\n").unwrap();
        let err = read_text(&path).unwrap_err().to_string();
        assert!(
            err.contains("train.jsonl")
                && err.contains("line 3")
                && err.contains("0xe9")
                && err.contains("column 11"),
            "{err}"
        );
    }
}
