//! Parquet files as records: each row as the JSON object the readers already parse (struct
//! columns become objects, lists arrays, nulls `null`), numbered from 1 as a line would be.
//! Hugging Face stores datasets this way (`…/train-00000-of-00001.parquet`).

use crate::records::Records;
use crpo_sdk::PluginError;
use parquet::file::reader::{FileReader, SerializedFileReader};
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
        let record = row.map(|row| row.to_json_value()).map_err(|e| {
            // The library's message can carry a page of raw bytes: the start says what failed.
            let message = e.to_string();
            match message.char_indices().nth(200) {
                Some((cut, _)) => format!("unreadable Parquet row: {}…", &message[..cut]),
                None => format!("unreadable Parquet row: {message}"),
            }
        });
        records.push((index + 1, record));
    }
    Ok(records)
}
