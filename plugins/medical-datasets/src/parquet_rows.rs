//! Parquet files as records: each row as the JSON object the readers already parse (struct
//! columns become objects, lists arrays, nulls `null`), numbered from 1 as a line would be.
//! Hugging Face stores datasets this way (`…/train-00000-of-00001.parquet`).

use crate::records::Records;
use crpo_sdk::PluginError;
use parquet::file::reader::SerializedFileReader;
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
    Ok(reader
        .into_iter()
        .enumerate()
        .map(|(index, row)| {
            let record = row
                .map(|row| row.to_json_value())
                .map_err(|e| format!("unreadable Parquet row: {e}"));
            (index + 1, record)
        })
        .collect())
}
