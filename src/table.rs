//! Aligned text tables for people (`status`, `run`, `quarantine`): each column
//! as wide as its widest cell, numbers right-aligned, no borders, one line per
//! row (control characters escaped, never wrapped or cut).

use comfy_table::{CellAlignment, ColumnConstraint, ContentArrangement, presets};

use crate::logging::escape_controls;

pub struct Table {
    inner: comfy_table::Table,
    columns: usize,
    right: Vec<usize>,
}

impl Table {
    /// A table with these column titles; `right` lists the columns of numbers.
    pub fn new(header: &[&str], right: &[usize]) -> Table {
        let mut inner = comfy_table::Table::new();
        inner
            .load_preset(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(header.iter().copied());
        Table {
            inner,
            columns: header.len(),
            right: right.to_vec(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.columns);
        self.inner
            .add_row(cells.iter().map(|c| escape_controls(c)).collect::<Vec<_>>());
    }

    /// The header line, then one line per row, in order.
    pub fn lines(&mut self) -> Vec<String> {
        for i in 0..self.columns {
            if let Some(column) = self.inner.column_mut(i) {
                column.set_padding((0, 2));
                column.set_constraint(ColumnConstraint::ContentWidth);
                if self.right.contains(&i) {
                    column.set_cell_alignment(CellAlignment::Right);
                }
            }
        }
        self.inner
            .lines()
            .map(|l| l.trim_end().to_owned())
            .collect()
    }

    /// The whole table, each line ending in a newline.
    pub fn render(&mut self) -> String {
        self.lines().into_iter().map(|l| l + "\n").collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_widest_cell_and_numbers_align_right() {
        let mut t = Table::new(&["NAME", "ROWS"], &[1]);
        t.row(vec!["a_very_long_file_name_2025-06.csv".into(), "7".into()]);
        t.row(vec!["b\nforged".into(), "1234".into()]);
        let lines = t.lines();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines[1].starts_with("a_very_long_file_name_2025-06.csv"),
            "{lines:#?}"
        );
        assert!(lines[2].starts_with("b\\nforged"), "{lines:#?}");
        // The numbers end in the same column.
        assert_eq!(lines[1].len(), lines[2].len(), "{lines:#?}");
        assert!(
            lines[1].ends_with(" 7") && lines[2].ends_with("1234"),
            "{lines:#?}"
        );
    }
}
