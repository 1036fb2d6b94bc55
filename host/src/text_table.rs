//! Plain-text tables for the terminal, log files and docs (Markdown-style borders, so they
//! read the same in all three), wrapped to the terminal's width when there is one.

use comfy_table::{presets, ColumnConstraint, ContentArrangement, Table, Width};
use unicode_width::UnicodeWidthStr;

/// A column is never narrower than its longest word up to this width, so a number or a name
/// is never split across lines; a longer word (a path) may be.
const UNSPLIT_WORD: usize = 30;

/// `header` over `rows`. When the terminal is too narrow for it and there are fewer rows than
/// columns (an eval table: a few runs, many objectives), it is printed turned: a row per
/// column, a column per row.
pub fn text_table(header: Vec<String>, rows: impl IntoIterator<Item = Vec<String>>) -> String {
    render(
        &header,
        &rows.into_iter().collect::<Vec<_>>(),
        Table::new().width(),
    )
}

/// The table for a terminal `width` columns wide (none: not a terminal, no wrapping).
fn render(header: &[String], rows: &[Vec<String>], width: Option<u16>) -> String {
    let too_wide = width.is_some_and(|width| narrowest_width(header, rows) > usize::from(width));
    if too_wide && rows.len() + 1 < header.len() {
        let (header, rows) = turned(header, rows);
        return build(&header, &rows, width).to_string();
    }
    build(header, rows, width).to_string()
}

fn build(header: &[String], rows: &[Vec<String>], width: Option<u16>) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::ASCII_MARKDOWN)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    if let Some(width) = width {
        table.set_width(width);
    }
    for row in rows {
        table.add_row(row.clone());
    }
    for (index, least) in least_widths(header, rows).into_iter().enumerate() {
        if let Some(column) = table.column_mut(index) {
            // comfy-table's bound counts the column's padding (a space either side).
            column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(least as u16 + 2)));
        }
    }
    table
}

/// Each column's longest word in terminal columns (header included), capped at [`UNSPLIT_WORD`].
fn least_widths(header: &[String], rows: &[Vec<String>]) -> Vec<usize> {
    (0..header.len())
        .map(|column| {
            std::iter::once(&header[column])
                .chain(rows.iter().filter_map(|row| row.get(column)))
                .flat_map(|cell| cell.split_whitespace())
                // Terminal columns, not chars: a CJK character takes two.
                .map(|word| word.width().min(UNSPLIT_WORD))
                .max()
                .unwrap_or(0)
        })
        .collect()
}

/// The table's width with every column at its least width: `| a | b |`.
fn narrowest_width(header: &[String], rows: &[Vec<String>]) -> usize {
    least_widths(header, rows).iter().map(|w| w + 3).sum::<usize>() + 1
}

/// Rows become columns: the first row holds the first column's cells, then a row per other
/// column, its header first.
fn turned(header: &[String], rows: &[Vec<String>]) -> (Vec<String>, Vec<Vec<String>>) {
    let cell = |row: &Vec<String>, column: usize| row.get(column).cloned().unwrap_or_default();
    let turned_header = std::iter::once(header[0].clone())
        .chain(rows.iter().map(|row| cell(row, 0)))
        .collect();
    let turned_rows = (1..header.len())
        .map(|column| {
            std::iter::once(header[column].clone())
                .chain(rows.iter().map(|row| cell(row, column)))
                .collect()
        })
        .collect();
    (turned_header, turned_rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval_like() -> (Vec<String>, Vec<Vec<String>>) {
        let mut header: Vec<String> = ["model / dataset", "decoding", "questions", "acc (share right)"]
            .map(String::from)
            .into();
        let mut row: Vec<String> = ["model / demo", "T=1, k=2 (vote)", "2", "0.482"]
            .map(String::from)
            .into();
        for name in [
            "accuracy",
            "clinical_reasoning",
            "comprehensiveness",
            "consistency",
            "faithfulness",
        ] {
            header.push(format!("{name} obj (mean)"));
            row.push("0.964".into());
        }
        (header, vec![row])
    }

    /// Every line of `table` within `width`, and no number split across lines.
    fn every_number_whole(table: &str) {
        for line in table.lines() {
            for word in line.split(|c: char| c == '|' || c.is_whitespace()) {
                if word.starts_with("0.") || word.starts_with("1.") {
                    assert_eq!(word.len(), 5, "{word:?} split in\n{table}");
                }
            }
        }
    }

    #[test]
    fn a_wide_table_on_a_narrow_terminal_is_turned_and_splits_no_number() {
        let (header, rows) = eval_like();
        let table = render(&header, &rows, Some(80));
        every_number_whole(&table);
        assert!(table.lines().all(|l| l.chars().count() <= 80), "{table}");
        assert!(
            table.contains("| faithfulness obj (mean)"),
            "one row per column:\n{table}"
        );
    }

    #[test]
    fn a_table_that_fits_keeps_its_shape_and_words() {
        let header = vec!["step".to_string(), "accuracy obj".into()];
        let rows = vec![vec!["1".to_string(), "0.250".into()]];
        let table = render(&header, &rows, Some(80));
        assert_eq!(
            table.lines().next().unwrap(),
            "| step | accuracy obj |",
            "{table}"
        );
    }

    #[test]
    fn many_rows_are_never_turned_and_keep_numbers_whole() {
        let (header, row) = eval_like();
        let rows = vec![row[0].clone(); 12];
        let table = render(&header, &rows, Some(60));
        every_number_whole(&table);
        assert!(table.lines().next().unwrap().starts_with("| model"), "{table}");
    }

    #[test]
    fn wide_characters_are_measured_in_terminal_columns() {
        // Four CJK characters take eight columns: counted as four, comfy-table split them.
        let header: Vec<String> = ["a", "b", "c", "d", "e", "f"].map(String::from).into();
        let rows = vec![vec!["心肌梗死".to_string(); 6]; 8];
        let table = render(&header, &rows, Some(40));
        for line in table.lines().skip(2) {
            assert_eq!(line.matches("心肌梗死").count(), 6, "split in\n{table}");
        }
    }
}
