//! CSV: records as text, with their true first line, quoted fields spanning
//! lines, and a row that holds several records caught.

use super::*;
use std::ops::Range;

/// Whether a quoted value spans a line that would itself be a whole record (as
/// many delimiters as the header): the sign of a quote that closed rows later.
fn holds_records(record: &Record, delimiter: u8, width: usize) -> bool {
    let needed = width.saturating_sub(1).max(1);
    record.iter().any(|field| {
        field
            .split(|&b| b == b'\n')
            .skip(1)
            .any(|line| line.iter().filter(|&&b| b == delimiter).count() >= needed)
    })
}

/// A line longer than this is read by csv_core (tiny in tests, so that both
/// ways read the same files).
const LONG_LINE: usize = if cfg!(test) { 64 } else { 1 << 20 };

/// The records of a delimited file, each with the line it starts on. A line
/// without a `\r` (but its line end's) whose fields are plain or quoted
/// whole, without a doubled quote, is one record, split in one pass over the
/// line (eight bytes at a time) at its delimiters and quotes; any other
/// record is read by csv_core from where it starts, exactly as the csv crate
/// reads it (quoted delimiters and line breaks, doubled quotes, a lone `\r`
/// as a line end). Blank lines between records are skipped, as csv_core
/// skips them. Most lines of most files take the first way: csv_core on every
/// byte was over half the instructions of reading them.
pub(super) struct Records<R> {
    reader: R,
    /// The bytes read and not yet taken: `buf[pos..end]`.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    eof: bool,
    core: csv_core::Reader,
    delimiter: u8,
    quote: u8,
    /// The line the byte at `pos` is on (1-based).
    line: u64,
    /// The last byte taken was a `\r`: a `\n` right after it ends the same line.
    after_cr: bool,
    /// Quote characters taken so far (the unclosed-quote check).
    quotes: u64,
    /// csv_core's output: the fields' bytes and where each ends.
    out: Vec<u8>,
    ends: Vec<usize>,
    /// The current record's fields, within its bytes.
    ranges: Vec<Range<usize>>,
}

/// One record: its fields as ranges of `bytes` (the line it was split from,
/// or csv_core's output).
pub(super) struct Record<'a> {
    bytes: &'a [u8],
    ranges: &'a [Range<usize>],
    /// Split from one line: no field holds a line break.
    one_line: bool,
}

impl<'a> Record<'a> {
    pub(super) fn len(&self) -> usize {
        self.ranges.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.ranges.iter().map(|r| &self.bytes[r.clone()])
    }

    /// Bytes holding every field (and, from a line, its delimiters and quotes).
    pub(super) fn as_slice(&self) -> &'a [u8] {
        self.bytes
    }
}

impl<R: Read> Records<R> {
    pub(super) fn new(reader: R, delimiter: u8, quote: u8) -> Records<R> {
        Records {
            reader,
            buf: vec![0; 1 << 20],
            pos: 0,
            end: 0,
            eof: false,
            core: csv_core::ReaderBuilder::new()
                .delimiter(delimiter)
                .quote(quote)
                .build(),
            delimiter,
            quote,
            line: 1,
            after_cr: false,
            quotes: 0,
            out: vec![0; 1024],
            ends: vec![0; 64],
            ranges: Vec::new(),
        }
    }

    /// Reads more of the input behind what is left (moved to the front, the
    /// buffer doubled when full); false at its end.
    fn fill(&mut self) -> std::io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        self.buf.copy_within(self.pos..self.end, 0);
        self.end -= self.pos;
        self.pos = 0;
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Counts the line breaks (`\n`, `\r\n` once, a lone `\r`) and quote
    /// characters of `buf[from..to]`, and takes them.
    fn take(&mut self, from: usize, to: usize) {
        // Right after a `\r`: a `\n` there is the rest of its line end.
        let mut after_cr = self.after_cr.then_some(from);
        for i in memchr::memchr3_iter(self.quote, b'\n', b'\r', &self.buf[from..to]) {
            let at = from + i;
            match self.buf[at] {
                b'\n' if after_cr == Some(at) => {}
                b'\n' => self.line += 1,
                b'\r' => {
                    self.line += 1;
                    after_cr = Some(at + 1);
                }
                _ => self.quotes += 1,
            }
        }
        if to > from {
            self.after_cr = self.buf[to - 1] == b'\r';
        }
        self.pos = to;
    }

    /// The next record and the line it starts on; None at the end of the input.
    pub(super) fn next(&mut self) -> std::io::Result<Option<(u64, Record<'_>)>> {
        // Blank lines are no record.
        loop {
            let blank = self.buf[self.pos..self.end]
                .iter()
                .position(|&b| b != b'\n' && b != b'\r');
            match blank {
                Some(0) => break,
                Some(n) => {
                    self.take(self.pos, self.pos + n);
                    break;
                }
                None => {
                    self.take(self.pos, self.end);
                    if !self.fill()? {
                        return Ok(None);
                    }
                }
            }
        }
        let line = self.line;
        // The line's end: searched from where the last search stopped.
        let mut searched = self.pos;
        let newline = loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[searched..self.end]) {
                break Some(searched + i);
            }
            let (pos, end) = (self.pos, self.end);
            // A line longer than this (or a file of lone `\r` line ends, one
            // line to this search) is csv_core's, which reads as it streams:
            // the buffer is never grown to hold it.
            if end - pos >= LONG_LINE {
                break None;
            }
            if !self.fill()? {
                break Some(self.end);
            }
            searched = end - pos;
        };
        let Some(stop) = newline else {
            return Ok(Some((line, self.parsed()?)));
        };
        let newline = (stop < self.end).then_some(stop);
        let start = self.pos;
        // A `\r\n` line end is a line end too.
        let line_end = &self.buf[start..stop];
        let content = line_end.strip_suffix(b"\r").unwrap_or(line_end);
        let Some(quotes) = split_line(content, self.delimiter, self.quote, &mut self.ranges) else {
            return Ok(Some((line, self.parsed()?)));
        };
        let len = content.len();
        match newline {
            // Taken whole: its quotes, its line end.
            Some(n) => {
                self.quotes += quotes;
                self.line += 1;
                self.after_cr = false;
                self.pos = n + 1;
            }
            None => self.take(self.pos, stop),
        }
        let record = Record {
            bytes: &self.buf[start..start + len],
            ranges: &self.ranges,
            one_line: true,
        };
        Ok(Some((line, record)))
    }

    /// One record read by csv_core from `pos` (where a record starts), as the
    /// csv crate reads it.
    fn parsed(&mut self) -> std::io::Result<Record<'_>> {
        use csv_core::ReadRecordResult as Core;
        self.core.reset();
        let (mut written, mut fields) = (0, 0);
        loop {
            let (result, read, out, ends) = self.core.read_record(
                &self.buf[self.pos..self.end],
                &mut self.out[written..],
                &mut self.ends[fields..],
            );
            self.take(self.pos, self.pos + read);
            written += out;
            fields += ends;
            match result {
                // At the end of the input, csv_core is told so by an empty read.
                Core::InputEmpty => {
                    self.fill()?;
                }
                Core::OutputFull => self.out.resize(self.out.len() * 2, 0),
                Core::OutputEndsFull => self.ends.resize(self.ends.len() * 2, 0),
                Core::Record | Core::End => break,
            }
        }
        self.ranges.clear();
        let mut from = 0;
        for &to in &self.ends[..fields] {
            self.ranges.push(from..to);
            from = to;
        }
        Ok(Record {
            bytes: &self.out[..written],
            ranges: &self.ranges,
            one_line: false,
        })
    }
}

/// One line (without its line end) as one record, split as csv_core splits
/// it, when its quoting is plain: each field that starts with a quote closes
/// right before a delimiter or the line's end, with no doubled quote inside
/// (a quote inside an unquoted field is a plain character to csv_core). The
/// quote characters it holds; None for a doubled quote, text after a closing
/// quote, a field still open at the line's end or any `\r`,
/// which are csv_core's to read.
fn split_line(
    content: &[u8],
    delimiter: u8,
    quote: u8,
    fields: &mut Vec<Range<usize>>,
) -> Option<u64> {
    // A `\r` (a line end to csv_core, or one counted inside quotes).
    if memchr::memchr(b'\r', content).is_some() {
        return None;
    }
    fields.clear();
    let (mut at, mut quotes) = (0, 0);
    loop {
        if content.get(at) == Some(&quote) {
            // Quoted text is long and skipped by memchr.
            let close = at + 1 + memchr::memchr(quote, &content[at + 1..])?;
            fields.push(at + 1..close);
            quotes += 2;
            match content.get(close + 1) {
                None => return Some(quotes),
                Some(&d) if d == delimiter => at = close + 2,
                Some(_) => return None,
            }
        } else {
            let start = at;
            at = field_end(content, at, delimiter, quote, &mut quotes);
            fields.push(start..at);
            if at == content.len() {
                return Some(quotes);
            }
            at += 1;
        }
    }
}

/// Where the unquoted field at `at` ends (the next delimiter, or the line's
/// end), counting the quote characters in it. Fields are short: eight bytes
/// are looked at a time (SWAR), where a search call per field cost more than
/// the field, and a loop a byte took eight instructions a byte.
fn field_end(content: &[u8], mut at: usize, delimiter: u8, quote: u8, quotes: &mut u64) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte of `w` equal to `b` (exact: no carry crosses bytes).
    let equal = |w: u64, b: u8| {
        let x = w ^ (ONES * u64::from(b));
        !(((x & LOW7) + LOW7) | x) & HIGH
    };
    while let Some(chunk) = content.get(at..at + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let (found, quoted) = (equal(w, delimiter), equal(w, quote));
        if found != 0 {
            let before = (found & found.wrapping_neg()) - 1;
            *quotes += u64::from((quoted & before).count_ones());
            return at + found.trailing_zeros() as usize / 8;
        }
        *quotes += u64::from(quoted.count_ones());
        at += 8;
    }
    while let Some(&b) = content.get(at) {
        if b == delimiter {
            break;
        }
        *quotes += u64::from(b == quote);
        at += 1;
    }
    at
}

/// Line breaks in a value: `\n`, `\r\n` and a lone `\r` each count once.
pub(super) fn line_breaks(bytes: &[u8]) -> u64 {
    let mut n = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n')) {
            n += 1;
        }
    }
    n
}

/// Field `pos` of a CSV record as text (null when the record is shorter or the
/// file lacks the column). `text` is the whole record when it is valid UTF-8,
/// checked once per record: a field is then its slice, as long as both its
/// ends fall on character boundaries.
pub(super) fn append_field(
    builder: &mut StringBuilder,
    record: &Record,
    text: Option<&str>,
    pos: Option<usize>,
) {
    let Some(range) = pos.and_then(|p| record.ranges.get(p).cloned()) else {
        builder.append_null();
        return;
    };
    match text.and_then(|t| t.get(range.clone())) {
        Some(s) => builder.append_value(s),
        None => append_bytes(builder, &record.as_slice()[range]),
    }
}

/// A CSV record may span this many lines (quoted line breaks) before it counts
/// as an unbalanced quote.
pub(super) const MAX_RECORD_LINES: u64 = 1000;

/// Why a record over `spans` lines is an unbalanced quote swallowing the rows
/// after it, if it is: more than one line with the wrong number of fields, too
/// many lines, or lines that look like records of their own.
fn unbalanced(record: &Record, spans: u64, delimiter: u8, width: usize) -> Option<String> {
    if spans <= 1 {
        None
    } else if record.len() != width {
        Some(format!(
            "has {} fields where the header has {width}",
            record.len()
        ))
    } else if spans > MAX_RECORD_LINES {
        Some(format!("is longer than {MAX_RECORD_LINES} lines"))
    } else if holds_records(record, delimiter, width) {
        Some("holds lines that look like records of their own".to_owned())
    } else {
        None
    }
}

/// The readers return whether they read to the end (false: the consumer left).
pub(super) fn read_csv(
    reader: impl Read,
    spec: &Spec,
    sink: &Sink,
) -> Result<bool, DataFusionError> {
    let mut records = Records::new(reader, spec.delimiter, spec.quote);
    let width = match records.next().map_err(ext)? {
        Some((_, header)) => header.len(),
        None => 0,
    };
    let mut batch = Batch::positioned(&spec.positions);
    let mut last_record = (0, 1);
    while let Some((line, record)) = records.next().map_err(ext)? {
        // A record spans as many lines more as its quoted fields hold line
        // breaks. More than one line with the wrong number of fields, or over
        // many lines, is an unbalanced quote swallowing the rows after it: the
        // whole file is malformed, so those rows cannot vanish from the counts.
        let inner: u64 =
            if record.one_line || memchr::memchr2(b'\n', b'\r', record.as_slice()).is_none() {
                0
            } else {
                record.iter().map(line_breaks).sum()
            };
        let spans = inner + 1;
        if let Some(why) = unbalanced(&record, spans, spec.delimiter, width) {
            return Err(malformed(format!(
                "line {line}: a quoted field opened on this record is not closed where \
                 expected: the record runs over {spans} lines and {why}. Check the quotes \
                 on line {line}"
            )));
        }
        last_record = (line, spans);
        if record.iter().all(is_blank) {
            continue;
        }
        let text = std::str::from_utf8(record.as_slice()).ok();
        for (builder, pos) in batch.values.iter_mut().zip(&spec.positions) {
            let Some(builder) = builder else { continue };
            append_field(builder, &record, text, *pos);
        }
        let shape = (record.len() != width).then(|| {
            format!(
                "the row has {} fields but the header has {width}",
                record.len()
            )
        });
        batch.end_row(line, shape);
        if !batch.flush(sink, false)? {
            return Ok(false);
        }
    }
    // An odd number of quote characters (escaped quotes come in pairs) and a last
    // record over several lines: its quote never closed and it ran to the end of
    // the file, swallowing every line after it.
    let (line, spans) = last_record;
    if spans > 1 && records.quotes % 2 == 1 {
        return Err(malformed(format!(
            "line {line}: a quoted field opened on this record is never closed; it runs \
             from line {line} to the end of the file. Check the quotes on line {line}"
        )));
    }
    batch.flush(sink, true)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::source::tests::Trickle;
    use proptest::prelude::*;

    proptest! {
        /// The records of any bytes are exactly the csv crate's, field by field,
        /// whole or read a few bytes at a time: plain lines split in one pass and
        /// the rest read by csv_core agree with csv_core reading everything.
        /// Every quote character is counted (the unclosed-quote check).
        #[test]
        fn records_are_the_csv_crates_records(
            bytes in proptest::collection::vec(proptest::sample::select(b",,\"\r\n\n ab".to_vec()), 0..300),
        ) {
            let want: Vec<Vec<Vec<u8>>> = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(&bytes[..])
                .byte_records()
                .map(|r| r.unwrap().iter().map(<[u8]>::to_vec).collect())
                .collect();
            let read = |input: Box<dyn Read + '_>| {
                let mut records = Records::new(input, b',', b'"');
                let mut got = Vec::new();
                while let Some((_, record)) = records.next().unwrap() {
                    got.push(record.iter().map(<[u8]>::to_vec).collect::<Vec<_>>());
                }
                (got, records.quotes)
            };
            let quotes = bytes.iter().filter(|&&b| b == b'"').count() as u64;
            prop_assert_eq!(read(Box::new(&bytes[..])), (want.clone(), quotes));
            prop_assert_eq!(read(Box::new(Trickle(&bytes))), (want, quotes));
        }
    }
}
