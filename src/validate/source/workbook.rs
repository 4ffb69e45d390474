//! XLSX: the first sheet's cells as text, dates in the column's format.

use super::*;

pub(super) fn read_xlsx(bytes: Bytes, spec: &Spec, sink: &Sink) -> Result<bool, DataFusionError> {
    // A workbook that asks to be recalculated when opened was written by a
    // program that does not calculate: its formula cells hold placeholders.
    let uncalculated = asks_full_calculation(&bytes);
    let mut book: Xlsx<_> = Xlsx::new(std::io::Cursor::new(bytes)).map_err(malformed)?;
    let sheet = match &spec.sheet {
        Some(s) => s.clone(),
        None => book
            .sheet_names()
            .first()
            .cloned()
            .ok_or_else(|| malformed("the XLSX file has no sheet"))?,
    };
    let range = book.worksheet_range(&sheet).map_err(malformed)?;
    // The formulas behind the cells: one without a saved result reads as an
    // empty cell, though the sheet shows a value.
    let formulas = book.worksheet_formula(&sheet).ok();
    let (first_row, first_col) = range.start().unwrap_or((0, 0));
    let formula_at = |i: usize, p: usize| {
        let at = (first_row + i as u32, first_col + p as u32);
        formulas
            .as_ref()
            .and_then(|f| f.get_value(at))
            .is_some_and(|f| !f.trim().is_empty())
    };
    let unsaved = |i: usize, p: usize| formula_at(i, p);
    let mut batch = Batch::positioned(&spec.positions);
    for (i, row) in range.rows().enumerate().skip(1) {
        let blank = row.iter().enumerate().all(|(p, cell)| match cell {
            Data::Empty => !unsaved(i, p),
            Data::String(s) => is_blank(s.as_bytes()),
            _ => false,
        });
        if blank {
            continue;
        }
        for ((builder, pos), fmt) in batch
            .values
            .iter_mut()
            .zip(&spec.positions)
            .zip(&spec.temporal_formats)
        {
            let Some(builder) = builder else { continue };
            match pos.and_then(|p| row.get(p)) {
                Some(cell) => match cell_text(cell, fmt.as_deref()) {
                    Some(t) => builder.append_value(t),
                    None => builder.append_null(),
                },
                None => builder.append_null(),
            }
        }
        // A formula error (#DIV/0!, #N/A...) is no value, and a whole number
        // past 2^53 was rounded when the spreadsheet stored it as a double:
        // the row says where.
        let errors: Vec<String> = spec
            .positions
            .iter()
            .zip(&spec.columns)
            .filter_map(|(pos, name)| match pos.and_then(|p| row.get(p)) {
                Some(Data::Error(e)) => Some(format!("{name} holds the spreadsheet error {e}")),
                Some(Data::Empty) if pos.is_some_and(|p| unsaved(i, p)) => Some(format!(
                    "{name} holds a formula without a saved result (the program that wrote \
                     the file did not calculate it): save it from a spreadsheet, or export values"
                )),
                Some(_) if uncalculated && pos.is_some_and(|p| formula_at(i, p)) => Some(format!(
                    "{name} holds a formula whose saved value is a placeholder (the workbook \
                     asks to be recalculated when opened: the program that wrote it did not \
                     calculate): save it from a spreadsheet, or export values"
                )),
                Some(Data::Float(f)) if f.fract() == 0.0 && f.abs() > EXACT => Some(format!(
                    "{name} holds {f}, a number with more digits than a spreadsheet keeps \
                     (it was rounded when saved): store it as text"
                )),
                _ => None,
            })
            .collect();
        // Spreadsheet rows are 1-based; the header is the sheet's first used row.
        batch.end_row(
            u64::from(first_row) + i as u64 + 1,
            (!errors.is_empty()).then(|| errors.join("; ")),
        );
        if !batch.flush(sink, false)? {
            return Ok(false);
        }
    }
    batch.flush(sink, true)?;
    Ok(true)
}

/// Whether `xl/workbook.xml` asks for a full calculation on load
/// (`<calcPr fullCalcOnLoad="1"/>`), as programs that write formulas without
/// computing them do (xlsxwriter, openpyxl).
fn asks_full_calculation(bytes: &[u8]) -> bool {
    use std::io::Read;
    let Ok(mut zip) = zip::ZipArchive::new(std::io::Cursor::new(bytes)) else {
        return false;
    };
    let Ok(entry) = zip.by_name("xl/workbook.xml") else {
        return false;
    };
    let mut xml = String::new();
    // The workbook part is small; the archive's size was checked at ingest.
    if entry.take(16 << 20).read_to_string(&mut xml).is_err() {
        return false;
    }
    let compact: String = xml.chars().filter(|c| !c.is_whitespace()).collect();
    compact.contains("fullCalcOnLoad=\"1\"")
        || compact.contains("fullCalcOnLoad=\"true\"")
        || compact.contains("fullCalcOnLoad='1'")
        || compact.contains("fullCalcOnLoad='true'")
}

/// The largest whole number a double holds exactly (2^53): past it, a
/// spreadsheet's number has lost digits.
const EXACT: f64 = 9_007_199_254_740_992.0;

/// A cell as the text a CSV export would hold; dates in the column's format.
pub(super) fn cell_text(cell: &Data, temporal_format: Option<&str>) -> Option<String> {
    match cell {
        Data::Empty | Data::Error(_) => None,
        Data::String(s) => Some(s.clone()),
        Data::Float(f) if f.fract() == 0.0 && f.abs() <= EXACT => Some(format!("{}", *f as i64)),
        Data::Float(f) => Some(f.to_string()),
        Data::Int(i) => Some(i.to_string()),
        Data::Bool(b) => Some(b.to_string()),
        Data::DateTime(_) | Data::DateTimeIso(_) => {
            // A spreadsheet's date has no zone: it is read as UTC, so a format
            // with `%z` writes +0000 (as a timestamp is stored) instead of
            // failing; a format it still cannot write gives ISO text, which
            // then fails the column's format as a row error.
            let dt = cell.as_datetime()?.and_utc();
            let iso = || dt.format("%Y-%m-%d %H:%M:%S").to_string();
            Some(match temporal_format {
                Some(f) => {
                    use std::fmt::Write;
                    let mut out = String::new();
                    match write!(out, "{}", dt.format(f)) {
                        Ok(()) => out,
                        Err(_) => iso(),
                    }
                }
                None => iso(),
            })
        }
        Data::DurationIso(s) => Some(s.clone()),
    }
}
