//! Reading only the header of a landed file, and comparing it with the declared
//! columns.
//!
//! CSV and JSONL read at most `limits.header_max_bytes` from the start, Parquet
//! reads its footer, XLSX checks the archive's declared sizes before calamine
//! opens it and then streams the first row only.

use std::io::Cursor;

use calamine::{DataType, Reader, Xlsx};
use datafusion::arrow::datatypes::{DataType as ArrowType, Schema};
use datafusion::parquet::arrow::parquet_to_arrow_schema;
use datafusion::parquet::file::metadata::ParquetMetaDataReader;
use indexmap::IndexMap;

use crate::config::{Dataset, FileFormat, HeaderMode, Limits};
use crate::landed::{Landed, LandedError, LandedFile};

/// Why a header could not be taken: a rejection of the file, or an I/O failure.
#[derive(Debug)]
pub enum HeaderError {
    Reject(String),
    Io(LandedError),
}

impl From<LandedError> for HeaderError {
    fn from(e: LandedError) -> Self {
        HeaderError::Io(e)
    }
}

/// The column names at the top of `file`. For Parquet, whose header carries
/// types, a declared column stored in a type that cannot feed it (a list, a
/// struct, text for a date...) rejects the file naming the column and both
/// types: it is never read as absent or as NULLs.
pub async fn read(
    landed: &Landed,
    file: &LandedFile,
    format: FileFormat,
    ds: &Dataset,
    limits: &Limits,
) -> Result<Vec<String>, HeaderError> {
    Ok(read_typed(landed, file, format, ds, limits).await?.names)
}

/// A file's header as [`read_typed`] takes it.
#[derive(Debug)]
pub struct Header {
    pub names: Vec<String>,
    /// The Arrow type of each column when the file has types (Parquet); empty otherwise.
    pub types: Vec<ArrowType>,
    /// How many rows the file holds: Parquet's footer says; for CSV and JSONL a
    /// guess from the lines in the bytes read for the header; None for XLSX.
    pub rows_estimate: Option<u64>,
}

/// [`read`], with the types Parquet carries and an estimate of the row count.
pub async fn read_typed(
    landed: &Landed,
    file: &LandedFile,
    format: FileFormat,
    ds: &Dataset,
    limits: &Limits,
) -> Result<Header, HeaderError> {
    let csv = (ds.delimiter as u8, ds.quote as u8);
    let sheet = ds.sheet.as_deref();
    if file.size == 0 {
        return Err(HeaderError::Reject("the file is empty".into()));
    }
    match format {
        FileFormat::Csv => {
            let bytes = landed.read_range(file, 0, limits.header_max_bytes).await?;
            let names = csv_header(&bytes, file.size, csv.0, csv.1).map_err(HeaderError::Reject)?;
            Ok(Header {
                names,
                types: Vec::new(),
                rows_estimate: Some(rows_estimate(&bytes, file.size)),
            })
        }
        FileFormat::Jsonl => {
            let bytes = landed.read_range(file, 0, limits.header_max_bytes).await?;
            let names = jsonl_keys(&bytes, file.size).map_err(HeaderError::Reject)?;
            Ok(Header {
                names,
                types: Vec::new(),
                rows_estimate: Some(rows_estimate(&bytes, file.size)),
            })
        }
        FileFormat::Parquet => parquet_header(landed, file, ds).await,
        FileFormat::Xlsx => {
            if file.size > limits.xlsx_max_uncompressed_bytes {
                return Err(HeaderError::Reject(format!(
                    "the XLSX file is {} bytes, more than the limit of {} (limits.xlsx_max_uncompressed_bytes)",
                    file.size, limits.xlsx_max_uncompressed_bytes
                )));
            }
            let bytes = landed.read_range(file, 0, file.size).await?;
            let (sheet, cap) = (sheet.map(str::to_owned), limits.xlsx_max_uncompressed_bytes);
            // Unzipping up to `cap` bytes is CPU work: off the runtime's threads.
            let names = crate::blocking::run(move || xlsx_header(&bytes, sheet.as_deref(), cap))
                .await
                .map_err(HeaderError::Reject)?;
            Ok(Header {
                names,
                types: Vec::new(),
                rows_estimate: None,
            })
        }
    }
}

/// A Parquet file's columns and types, refused when a declared column's type
/// cannot be read as the declared one; the row count from its footer.
async fn parquet_header(
    landed: &Landed,
    file: &LandedFile,
    ds: &Dataset,
) -> Result<Header, HeaderError> {
    let (schema, rows) = parquet_schema(landed, file).await?;
    let unfit: Vec<String> = schema
        .fields()
        .iter()
        .filter_map(|f| {
            let column = ds.columns.get(f.name())?;
            (!column.ty.accepts(f.data_type())).then(|| {
                format!(
                    "column `{}` is {} in the file, which cannot be read as {}",
                    f.name(),
                    f.data_type(),
                    column.ty
                )
            })
        })
        .collect();
    if !unfit.is_empty() {
        return Err(HeaderError::Reject(format!(
            "Parquet types do not fit the declared columns: {}",
            unfit.join("; ")
        )));
    }
    let (names, types) = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .unzip();
    Ok(Header {
        names,
        types,
        rows_estimate: Some(rows),
    })
}

/// The rows of a `file_size`-byte text file whose first bytes are `sample`, at
/// the sample's bytes per line (a field holding line breaks makes it an
/// overestimate). Validate sizes its key set with it up front.
pub fn rows_estimate(sample: &[u8], file_size: u64) -> u64 {
    let lines = sample.iter().filter(|&&b| b == b'\n').count() as u64;
    if sample.is_empty() || sample.len() as u64 >= file_size {
        return lines + 1;
    }
    (file_size as u128 * lines.max(1) as u128 / sample.len() as u128) as u64 + 1
}

/// The Arrow schema in a Parquet file's footer and its row count (two range
/// reads, no data).
pub async fn parquet_schema(
    landed: &Landed,
    file: &LandedFile,
) -> Result<(Schema, u64), HeaderError> {
    let reject = |why: String| HeaderError::Reject(format!("not a readable Parquet file: {why}"));
    let tail = landed
        .read_range(file, file.size.saturating_sub(8), file.size)
        .await?;
    if tail.len() < 8 || &tail[4..] != b"PAR1" {
        return Err(reject("no PAR1 footer (truncated or not Parquet)".into()));
    }
    let len = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64;
    if len + 12 > file.size {
        return Err(reject(format!(
            "footer length {len} exceeds the file (truncated)"
        )));
    }
    let footer = landed
        .read_range(file, file.size - 8 - len, file.size - 8)
        .await?;
    let meta =
        ParquetMetaDataReader::decode_metadata(&footer).map_err(|e| reject(e.to_string()))?;
    let fm = meta.file_metadata();
    let schema = parquet_to_arrow_schema(fm.schema_descr(), fm.key_value_metadata())
        .map_err(|e| reject(e.to_string()))?;
    Ok((schema, fm.num_rows().max(0) as u64))
}

/// The first record of a CSV held in `bytes` (the first bytes of a `file_size` file).
pub fn csv_header(
    bytes: &[u8],
    file_size: u64,
    delimiter: u8,
    quote: u8,
) -> Result<Vec<String>, String> {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err("the file is UTF-16 encoded; save it as UTF-8".into());
    }
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let whole = (bytes.len() as u64) >= file_size;
    if whole && body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(if body.is_empty() {
            "the file holds only a byte-order mark: no header, no rows".into()
        } else {
            "the file holds only blank lines: no header, no rows".into()
        });
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .quote(quote)
        .from_reader(body);
    let mut record = csv::ByteRecord::new();
    let found = reader
        .read_byte_record(&mut record)
        .map_err(|e| format!("the header is not valid CSV: {e}"))?;
    let consumed = reader.position().byte() as usize;
    // Unless we hold the whole file, the record must end inside what we read.
    let ended = consumed < body.len() || body.ends_with(b"\n");
    if !found || !(whole || ended) {
        return Err(format!(
            "the header is longer than {} bytes (limits.header_max_bytes)",
            bytes.len()
        ));
    }
    record
        .iter()
        .enumerate()
        .map(|(i, field)| {
            std::str::from_utf8(field)
                .map(str::to_owned)
                .map_err(|_| format!("the header is not UTF-8 (column {})", i + 1))
        })
        .collect()
}

/// Keys of the first records of a JSONL file, in order of first appearance.
pub fn jsonl_keys(bytes: &[u8], file_size: u64) -> Result<Vec<String>, String> {
    const RECORDS: usize = 100;
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let whole = (bytes.len() as u64) >= file_size;
    let mut keys: Vec<String> = Vec::new();
    let mut seen = 0;
    let mut lines = body.split(|b| *b == b'\n').enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        // The last piece may be cut off by the cap, unless we hold the whole file.
        if lines.peek().is_none() && !whole {
            break;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Err(e) = std::str::from_utf8(line) {
            return Err(format!(
                "line {} is not UTF-8 (at byte {} of the line); re-export the file as UTF-8",
                i + 1,
                e.valid_up_to() + 1
            ));
        }
        let record: IndexMap<String, serde::de::IgnoredAny> = match serde_json::from_slice(line) {
            Ok(record) => record,
            // After a good record, a bad one is a row validate quarantines, as
            // it would be on line 5001: the header is the keys, not the file.
            Err(_) if seen > 0 => break,
            Err(e) => return Err(format!("line {} is not a JSON object: {e}", i + 1)),
        };
        for k in record.into_keys() {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        seen += 1;
        if seen == RECORDS {
            break;
        }
    }
    if seen == 0 {
        return Err(if whole {
            "the file has no JSON record".into()
        } else {
            format!(
                "the first record is longer than {} bytes (limits.header_max_bytes)",
                bytes.len()
            )
        });
    }
    Ok(keys)
}

/// The first row of the sheet, after refusing archives that would inflate past `cap`.
///
/// Summing the central directory's declared sizes is enough: the zip crate stops
/// any entry that inflates past its declared size ("File is larger than its
/// declared uncompressed size"), so a lying archive cannot exceed the sum either.
pub fn xlsx_header(bytes: &[u8], sheet: Option<&str>, cap: u64) -> Result<Vec<String>, String> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| format!("not a readable XLSX (zip) file: {e}"))?;
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| format!("not a readable XLSX (zip) file: {e}"))?;
        total = total.saturating_add(entry.size());
        if total > cap {
            return Err(format!(
                "the XLSX file decompresses to more than {cap} bytes (limits.xlsx_max_uncompressed_bytes); \
                 refusing to open it"
            ));
        }
    }
    let mut workbook: Xlsx<_> =
        Xlsx::new(Cursor::new(bytes)).map_err(|e| format!("not a readable XLSX file: {e}"))?;
    let names = workbook.sheet_names();
    let sheet = match sheet {
        Some(s) if names.iter().any(|n| n == s) => s.to_owned(),
        Some(s) => {
            return Err(format!(
                "the XLSX file has no sheet `{s}` (sheets: {})",
                names.join(", ")
            ));
        }
        None => names.first().cloned().ok_or("the XLSX file has no sheet")?,
    };
    let mut cells = workbook
        .worksheet_cells_reader(&sheet)
        .map_err(|e| format!("cannot read sheet `{sheet}`: {e}"))?;
    let mut header: Vec<(u32, String)> = Vec::new();
    let mut first_row = None;
    while let Some(cell) = cells
        .next_cell()
        .map_err(|e| format!("cannot read sheet `{sheet}`: {e}"))?
    {
        let (row, col) = cell.get_position();
        match first_row {
            None => first_row = Some(row),
            Some(r) if row != r => break,
            _ => {}
        }
        header.push((col, cell.get_value().as_string().unwrap_or_default()));
    }
    if header.is_empty() {
        return Err(format!("sheet `{sheet}` is empty"));
    }
    // Columns are positional: a gap in the first row is an empty header name.
    let first_col = header.iter().map(|(c, _)| *c).min().unwrap_or(0);
    let last_col = header.iter().map(|(c, _)| *c).max().unwrap_or(0);
    Ok((first_col..=last_col)
        .map(|c| {
            header
                .iter()
                .find(|(col, _)| *col == c)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        })
        .collect())
}

/// Compares a header with the declared columns; returns the extra columns that
/// `subset` mode drops, or the reason the header is rejected.
pub fn compare(
    declared: &[&str],
    found: &[String],
    mode: HeaderMode,
) -> Result<Vec<String>, String> {
    let mut problems = Vec::new();
    let mut dups: Vec<&str> = Vec::new();
    for (i, f) in found.iter().enumerate() {
        if found[..i].contains(f) && !dups.contains(&f.as_str()) {
            dups.push(f);
        }
    }
    if !dups.is_empty() {
        problems.push(format!("duplicated columns: {}", dups.join(", ")));
    }
    let missing: Vec<&str> = declared
        .iter()
        .copied()
        .filter(|d| !found.iter().any(|f| f == d))
        .collect();
    if !missing.is_empty() {
        problems.push(format!("missing columns: {}", missing.join(", ")));
    }
    let extra: Vec<String> = found
        .iter()
        .filter(|f| !declared.contains(&f.as_str()))
        .cloned()
        .collect();
    if mode == HeaderMode::Strict {
        if !extra.is_empty() {
            problems.push(format!(
                "unexpected columns: {} (headers: strict; use headers: subset to drop extras)",
                extra
                    .iter()
                    .map(|e| format!("{e:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if missing.is_empty() && extra.is_empty() && dups.is_empty() {
            let misplaced: Vec<String> = declared
                .iter()
                .zip(found)
                .enumerate()
                .filter(|(_, (d, f))| *d != f)
                .map(|(i, (d, f))| format!("position {} is {f} but should be {d}", i + 1))
                .collect();
            if !misplaced.is_empty() {
                problems.push(format!("columns out of order: {}", misplaced.join("; ")));
            }
        }
    }
    if problems.is_empty() {
        Ok(if mode == HeaderMode::Subset {
            extra
        } else {
            Vec::new()
        })
    } else {
        Err(format!(
            "header does not match the declared columns: {}",
            problems.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Header readers on arbitrary bytes, whole or cut: a header with a
        /// name (JSONL: each key once) or a reason in words, never a panic.
        #[test]
        fn header_readers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), extra in 0u64..2) {
            let size = bytes.len() as u64 + extra;
            match csv_header(&bytes, size, b',', b'"') {
                Ok(names) => prop_assert!(!names.is_empty()),
                Err(reason) => prop_assert!(!reason.trim().is_empty()),
            }
            match jsonl_keys(&bytes, size) {
                Ok(keys) => {
                    let unique: std::collections::BTreeSet<&String> = keys.iter().collect();
                    prop_assert_eq!(unique.len(), keys.len(), "each key once: {:?}", keys);
                }
                Err(reason) => prop_assert!(!reason.trim().is_empty()),
            }
        }
    }

    #[test]
    fn rows_estimate_scales_the_sample_to_the_file() {
        // The whole file read: its lines (the last may lack a line break).
        assert_eq!(rows_estimate(b"a,b\n1,2\n3,4\n", 12), 4);
        // 10 lines in 100 bytes of a 1 000 000-byte file: about 100 000 rows.
        let sample = b"123456789\n".repeat(10);
        assert_eq!(rows_estimate(&sample, 1_000_000), 100_001);
        // One line longer than the sample still counts as a line.
        assert_eq!(rows_estimate(&[b'x'; 100], 1000), 11);
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn csv_header_with_bom_quotes_and_delimiter() {
        let data = b"\xEF\xBB\xBFid,\"full, name\",email\n1,x,y\n";
        assert_eq!(
            csv_header(data, data.len() as u64, b',', b'"').unwrap(),
            s(&["id", "full, name", "email"])
        );
        let data = b"id;'a;b'\r\n1;2\r\n";
        assert_eq!(
            csv_header(data, data.len() as u64, b';', b'\'').unwrap(),
            s(&["id", "a;b"])
        );
    }

    #[test]
    fn blank_and_bom_only_files_say_so() {
        let only = |b: &[u8]| csv_header(b, b.len() as u64, b',', b'"').unwrap_err();
        assert!(only(b"\n\n \r\n").contains("only blank lines"));
        assert!(only(b"\xEF\xBB\xBF").contains("only a byte-order mark"));
    }

    #[test]
    fn csv_header_only_file_without_newline_is_read() {
        let data = b"id,email";
        assert_eq!(
            csv_header(data, data.len() as u64, b',', b'"').unwrap(),
            s(&["id", "email"])
        );
    }

    #[test]
    fn csv_header_longer_than_the_cap_is_rejected() {
        let data = b"id,email,aaaaaaaaaaaaaaaa";
        let err = csv_header(&data[..10], 1000, b',', b'"').unwrap_err();
        assert!(err.contains("longer than 10 bytes"), "{err}");
    }

    #[test]
    fn csv_header_utf16_and_latin1_are_rejected() {
        assert!(
            csv_header(b"\xFF\xFEi\0d\0", 6, b',', b'"')
                .unwrap_err()
                .contains("UTF-16")
        );
        assert!(
            csv_header(b"id,caf\xe9\n", 8, b',', b'"')
                .unwrap_err()
                .contains("not UTF-8 (column 2)")
        );
    }

    #[test]
    fn jsonl_keys_union_in_order() {
        let data = b"{\"id\":1,\"email\":\"a\"}\n\n{\"id\":2,\"amount\":3}\n";
        assert_eq!(
            jsonl_keys(data, data.len() as u64).unwrap(),
            s(&["id", "email", "amount"])
        );
        let err = jsonl_keys(b"{\"id\":\xff}\n", 10).unwrap_err();
        assert!(err.starts_with("line 1 is not UTF-8 (at byte 7"), "{err}");
        // A bad record after a good one is not the header's business.
        assert_eq!(
            jsonl_keys(b"{\"id\":1}\n42\n{\"x\":2}\n", 21).unwrap(),
            s(&["id"])
        );
        let err = jsonl_keys(b"not json\n", 9).unwrap_err();
        assert!(err.starts_with("line 1 is not a JSON object"), "{err}");
        let err = jsonl_keys(b"{\"id\": 1111111", 1000).unwrap_err();
        assert!(err.contains("longer than"), "{err}");
        assert!(
            jsonl_keys(b"\n\n", 2)
                .unwrap_err()
                .contains("no JSON record")
        );
    }

    #[test]
    fn strict_needs_exact_columns_in_order() {
        let declared = ["id", "email", "amount"];
        assert!(
            compare(
                &declared,
                &s(&["id", "email", "amount"]),
                HeaderMode::Strict
            )
            .is_ok()
        );
        let err = compare(
            &declared,
            &s(&["id", "amount", "email"]),
            HeaderMode::Strict,
        )
        .unwrap_err();
        assert!(
            err.contains("out of order: position 2 is amount but should be email"),
            "{err}"
        );
        let err = compare(&declared, &s(&["id", "email"]), HeaderMode::Strict).unwrap_err();
        assert!(err.contains("missing columns: amount"), "{err}");
        let err = compare(
            &declared,
            &s(&["id", "email", "amount", "x"]),
            HeaderMode::Strict,
        )
        .unwrap_err();
        assert!(err.contains("unexpected columns: \"x\""), "{err}");
        let err = compare(
            &declared,
            &s(&["id", "email", "amount", "id"]),
            HeaderMode::Strict,
        )
        .unwrap_err();
        assert!(err.contains("duplicated columns: id"), "{err}");
    }

    #[test]
    fn subset_drops_extras_but_needs_every_declared_column() {
        let declared = ["id", "email"];
        let extra = compare(&declared, &s(&["email", "x", "id"]), HeaderMode::Subset).unwrap();
        assert_eq!(extra, s(&["x"]));
        let err = compare(&declared, &s(&["email", "x"]), HeaderMode::Subset).unwrap_err();
        assert!(err.contains("missing columns: id"), "{err}");
    }
}
