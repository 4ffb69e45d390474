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
        let parsed: Result<Record, _> = serde_json::from_slice(&line);
        let shape = match &parsed {
            Ok(Record {
                map: obj,
                duplicate,
            }) => {
                for (builder, name) in batch.values.iter_mut().flatten().zip(&spec.columns) {
                    match obj.get(name) {
                        None | Some(serde_json::Value::Null) => builder.append_null(),
                        Some(serde_json::Value::String(s)) => builder.append_value(s),
                        Some(other) => builder.append_value(other.to_string()),
                    }
                }
                duplicate.as_ref().map(|key| {
                    format!("the key `{key}` is written twice in the record: which value is meant is unknown")
                })
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

/// One JSON object, and the first key it holds twice (serde_json keeps the
/// last value silently; a record that says two things is a row error).
struct Record {
    map: serde_json::Map<String, serde_json::Value>,
    duplicate: Option<String>,
}

impl<'de> serde::Deserialize<'de> for Record {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Record, D::Error> {
        d.deserialize_map(RecordVisitor)
    }
}

struct RecordVisitor;

impl<'de> serde::de::Visitor<'de> for RecordVisitor {
    type Value = Record;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Record, A::Error> {
        let mut map = serde_json::Map::new();
        let mut duplicate = None;
        while let Some((key, value)) = access.next_entry::<String, serde_json::Value>()? {
            if map.contains_key(&key) {
                duplicate.get_or_insert_with(|| key.clone());
            }
            map.insert(key, value);
        }
        Ok(Record { map, duplicate })
    }
}
