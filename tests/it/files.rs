//! Writing test inputs in every landed format: CSV text, JSONL, Parquet, XLSX.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;

/// A Parquet file with the given columns, all strings.
pub fn write_parquet(path: &Path, columns: &[&str], rows: &[Vec<&str>]) {
    write_parquet_columns(
        path,
        columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let values: Vec<&str> = rows.iter().map(|r| r[i]).collect();
                (*c, Arc::new(StringArray::from(values)) as ArrayRef)
            })
            .collect(),
    );
}

/// A Parquet file of one row group holding `columns` in their own Arrow types
/// (all nullable).
pub fn write_parquet_columns(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let arrays = columns.into_iter().map(|(_, a)| a).collect();
    let batch = RecordBatch::try_new(schema.clone(), arrays).unwrap();
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// JSON lines, one object per row, keys in column order.
pub fn write_jsonl(path: &Path, columns: &[&str], rows: &[Vec<&str>]) {
    let mut out = String::new();
    for r in rows {
        let fields: Vec<String> = columns
            .iter()
            .zip(r)
            .map(|(c, v)| format!("{}:{}", serde_json::json!(c), serde_json::json!(v)))
            .collect();
        out.push_str(&format!("{{{}}}\n", fields.join(",")));
    }
    std::fs::write(path, out).unwrap();
}

/// A minimal XLSX workbook: one sheet named `sheet`, inline strings (a value
/// `!ERR #DIV/0!` is a formula-error cell), and an
/// optional extra entry of `padding` zero bytes (a zip bomb when large).
pub fn write_xlsx(path: &Path, sheet: &str, rows: &[Vec<&str>], padding: usize) {
    write_xlsx_as(path, sheet, rows, padding, false)
}

/// [`write_xlsx`], whose workbook asks to be recalculated when opened
/// (`fullCalcOnLoad`, as xlsxwriter writes it) when `uncalculated`.
pub fn write_xlsx_as(
    path: &Path,
    sheet: &str,
    rows: &[Vec<&str>],
    padding: usize,
    uncalculated: bool,
) {
    let calc = if uncalculated {
        r#"<calcPr fullCalcOnLoad="1"/>"#
    } else {
        ""
    };
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let mut put = |name: &str, body: &[u8]| {
        zip.start_file(name, opts).unwrap();
        zip.write_all(body).unwrap();
    };
    put(
        "[Content_Types].xml",
        br#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>"#,
    );
    put(
        "_rels/.rels",
        br#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#,
    );
    put(
        "xl/workbook.xml",
        format!(r#"<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="{sheet}" sheetId="1" r:id="rId1"/></sheets>{calc}</workbook>"#).as_bytes(),
    );
    put(
        "xl/_rels/workbook.xml.rels",
        br#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#,
    );
    let mut data = String::new();
    for (r, row) in rows.iter().enumerate() {
        data.push_str(&format!("<row r=\"{}\">", r + 1));
        for (c, v) in row.iter().enumerate() {
            let col = (b'A' + c as u8) as char;
            let v = v.replace('&', "&amp;").replace('<', "&lt;");
            // `!ERR #DIV/0!` writes a formula-error cell.
            // `!NUM 12345678901234567` writes a number cell, `!FORMULA X` a
            // formula without a saved result.
            if let Some(n) = v.strip_prefix("!NUM ") {
                data.push_str(&format!(r#"<c r="{col}{}"><v>{n}</v></c>"#, r + 1));
                continue;
            }
            // `!CALC f|v`: a formula with a saved value; `!DATE iso`: a date cell.
            if let Some((f, saved)) = v.strip_prefix("!CALC ").and_then(|c| c.split_once('|')) {
                data.push_str(&format!(
                    r#"<c r="{col}{}"><f>{f}</f><v>{saved}</v></c>"#,
                    r + 1
                ));
                continue;
            }
            if let Some(iso) = v.strip_prefix("!DATE ") {
                data.push_str(&format!(r#"<c r="{col}{}" t="d"><v>{iso}</v></c>"#, r + 1));
                continue;
            }
            if let Some(f) = v.strip_prefix("!FORMULA ") {
                data.push_str(&format!(r#"<c r="{col}{}"><f>{f}</f></c>"#, r + 1));
                continue;
            }
            if let Some(error) = v.strip_prefix("!ERR ") {
                data.push_str(&format!(
                    r#"<c r="{col}{}" t="e"><v>{error}</v></c>"#,
                    r + 1
                ));
                continue;
            }
            data.push_str(&format!(
                r#"<c r="{col}{}" t="inlineStr"><is><t>{v}</t></is></c>"#,
                r + 1
            ));
        }
        data.push_str("</row>");
    }
    put(
        "xl/worksheets/sheet1.xml",
        format!(r#"<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>{data}</sheetData></worksheet>"#).as_bytes(),
    );
    if padding > 0 {
        zip.start_file("xl/media/padding.bin", opts).unwrap();
        let chunk = vec![0u8; 1 << 16];
        let mut left = padding;
        while left > 0 {
            let n = left.min(chunk.len());
            zip.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
    }
    zip.finish().unwrap();
}

/// A CSV text from a header and rows (fields quoted when needed).
pub fn csv(columns: &[&str], rows: &[Vec<&str>]) -> String {
    let quote = |v: &str| {
        if v.contains([',', '"', '\n']) {
            format!("\"{}\"", v.replace('"', "\"\""))
        } else {
            v.to_owned()
        }
    };
    let mut out = columns
        .iter()
        .map(|c| quote(c))
        .collect::<Vec<_>>()
        .join(",")
        + "\n";
    for r in rows {
        out.push_str(&(r.iter().map(|v| quote(v)).collect::<Vec<_>>().join(",") + "\n"));
    }
    out
}

/// A typed Parquet file for load tests: id, amount, note (`n` rows from `first_id`;
/// with `poison`, the last row's amount is negative).
pub fn write_sales_parquet(path: &Path, n: usize, first_id: i64, poison: bool) {
    use datafusion::arrow::array::{Float64Array, Int64Array};
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("amount", DataType::Float64, true),
        Field::new("note", DataType::Utf8, true),
    ]));
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema.clone(), None).unwrap();
    let chunk = 65_536;
    let mut start = 0;
    while start < n {
        let end = (start + chunk).min(n);
        let ids: Vec<i64> = (start..end).map(|i| first_id + i as i64).collect();
        let amounts: Vec<f64> = (start..end)
            .map(|i| {
                if poison && i == n - 1 {
                    -1.0
                } else {
                    (i % 1000) as f64 + 0.25
                }
            })
            .collect();
        let notes: Vec<String> = (start..end)
            .map(|i| format!("row {i} of a load test, padded to look like real text"))
            .collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(Float64Array::from(amounts)),
                Arc::new(StringArray::from(notes)),
            ],
        )
        .unwrap();
        writer.write(&batch).unwrap();
        start = end;
    }
    writer.close().unwrap();
}
