//! JSON Lines: one object a line, each declared key's value as text.

use super::*;

pub(super) fn read_jsonl(
    reader: impl Read,
    spec: &Spec,
    sink: &Sink,
) -> Result<bool, DataFusionError> {
    use std::io::BufRead;
    let mut batch = Batch::new(spec.columns.len());
    let reader = std::io::BufReader::new(reader);
    for (i, line) in reader.split(b'\n').enumerate() {
        let mut line = line?;
        // A UTF-8 byte order mark before the first object is not part of it.
        if i == 0 && line.starts_with(b"\xEF\xBB\xBF") {
            line.drain(..3);
        }
        if is_blank(&line) {
            continue;
        }
        let parsed: Result<serde_json::Map<String, serde_json::Value>, _> =
            serde_json::from_slice(&line);
        let shape = match &parsed {
            Ok(obj) => {
                for (builder, name) in batch.values.iter_mut().flatten().zip(&spec.columns) {
                    match obj.get(name) {
                        None | Some(serde_json::Value::Null) => builder.append_null(),
                        Some(serde_json::Value::String(s)) => builder.append_value(s),
                        Some(other) => builder.append_value(other.to_string()),
                    }
                }
                None
            }
            Err(e) => {
                batch
                    .values
                    .iter_mut()
                    .flatten()
                    .for_each(|b| b.append_null());
                Some(format!("the line is not a JSON object: {e}"))
            }
        };
        batch.end_row(i as u64 + 1, shape);
        if !batch.flush(sink, false)? {
            return Ok(false);
        }
    }
    batch.flush(sink, true)?;
    Ok(true)
}
