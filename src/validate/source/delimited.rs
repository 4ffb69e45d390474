//! CSV: records as text, with their true first line, quoted fields spanning
//! lines, and a row that holds several records caught.

use super::*;

/// A csv error: I/O is a runtime failure, anything else says the file is malformed.
pub(super) fn csv_error(e: csv::Error) -> DataFusionError {
    if matches!(e.kind(), csv::ErrorKind::Io(_)) {
        ext(e)
    } else {
        malformed(e)
    }
}

/// Whether a quoted value spans a line that would itself be a whole record (as
/// many delimiters as the header): the sign of a quote that closed rows later.
pub(super) fn holds_records(record: &csv::ByteRecord, delimiter: u8, width: usize) -> bool {
    let needed = width.saturating_sub(1).max(1);
    record.iter().any(|field| {
        field
            .split(|&b| b == b'\n')
            .skip(1)
            .any(|line| line.iter().filter(|&&b| b == delimiter).count() >= needed)
    })
}

/// Watches the bytes the CSV parser reads: counts quote characters (for the
/// unclosed-quote check) and remembers where line breaks fall, so that a
/// record's true line comes from where it ends. The csv crate's own record
/// positions lag behind skipped blank lines and CRLF line ends.
pub(super) struct Watch<R> {
    pub(super) inner: R,
    pub(super) quote: u8,
    pub(super) state: Rc<RefCell<Watched>>,
}

#[derive(Default)]
pub(super) struct Watched {
    pub(super) quotes: u64,
    /// Bytes read so far.
    pub(super) read: u64,
    /// Line breaks read but not yet passed by a record (bounded by the
    /// parser's read-ahead buffer).
    pub(super) pending: VecDeque<Break>,
    /// Where the last byte read was a `\r`: a `\n` right after it widens that
    /// break to `\r\n` instead of being one of its own.
    pub(super) cr: Option<u64>,
    pub(super) passed: u64,
    pub(super) last_passed: Option<Break>,
}

/// One line break: `\n`, a lone `\r`, or `\r\n` (counted once, at its `\r`,
/// so a break is known when its first byte is read, whatever comes in the
/// next read), and the quote characters before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Break {
    start: u64,
    /// Offset just past it.
    end: u64,
    quotes: u64,
}

impl Watched {
    /// The line a record ending at byte `end` (exclusive) ends on.
    pub(super) fn end_line(&mut self, end: u64) -> u64 {
        while let Some(&newline) = self.pending.front().filter(|n| n.start < end) {
            self.pending.pop_front();
            self.passed += 1;
            self.last_passed = Some(newline);
        }
        // A line break right before `end`, outside quotes, ended the record: it
        // belongs to the record's line. Inside an unclosed quote it is content.
        // (A record may end after the `\r` of a `\r\n` or after its `\n`.)
        let terminated = self
            .last_passed
            .is_some_and(|b| (b.end == end || b.start + 1 == end) && b.quotes % 2 == 0);
        self.passed + 1 - u64::from(terminated)
    }
}

impl<R: Read> Read for Watch<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut state = self.state.borrow_mut();
        let start = state.read;
        // Line breaks are \n, \r\n and a lone \r. Only the bytes that matter
        // are visited (memchr's vectorised search).
        let bytes = &buf[..n];
        for i in memchr::memchr3_iter(self.quote, b'\n', b'\r', bytes) {
            let (b, at) = (bytes[i], start + i as u64);
            let quotes = state.quotes;
            if b == self.quote {
                state.quotes += 1;
            } else if b == b'\n' && state.cr.is_some_and(|cr| cr + 1 == at) {
                // The \n of a \r\n: its break was counted at the \r.
                let widen = |brk: &mut Break| {
                    if brk.start + 1 == at {
                        brk.end = at + 1;
                    }
                };
                if let Some(brk) = state.pending.back_mut() {
                    widen(brk);
                }
                if let Some(brk) = state.last_passed.as_mut() {
                    widen(brk);
                }
            } else {
                state.pending.push_back(Break {
                    start: at,
                    end: at + 1,
                    quotes,
                });
                if b == b'\r' {
                    state.cr = Some(at);
                }
            }
        }
        state.read += n as u64;
        Ok(n)
    }
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
    record: &csv::ByteRecord,
    text: Option<&str>,
    pos: Option<usize>,
) {
    let Some(range) = pos.and_then(|p| record.range(p)) else {
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
fn unbalanced(record: &csv::ByteRecord, spans: u64, delimiter: u8, width: usize) -> Option<String> {
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
    let watched = Rc::new(RefCell::new(Watched::default()));
    let reader = Watch {
        inner: reader,
        quote: spec.quote,
        state: watched.clone(),
    };
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .delimiter(spec.delimiter)
        .quote(spec.quote)
        .from_reader(reader);
    let width = csv.byte_headers().map_err(csv_error)?.len();
    let mut batch = Batch::positioned(&spec.positions);
    let mut record = csv::ByteRecord::new();
    let mut last_record = (0, 1);
    while csv.read_byte_record(&mut record).map_err(csv_error)? {
        // A record ends where the reader now stands, and starts as many lines
        // earlier as its quoted fields hold line breaks. More than one line with
        // the wrong number of fields, or over many lines, is an unbalanced quote
        // swallowing the rows after it: the whole file is malformed, so those
        // rows cannot vanish from the counts.
        let inner: u64 = if memchr::memchr2(b'\n', b'\r', record.as_slice()).is_none() {
            0
        } else {
            record.iter().map(line_breaks).sum()
        };
        let spans = inner + 1;
        let line = watched
            .borrow_mut()
            .end_line(csv.position().byte())
            .saturating_sub(inner);
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
    if spans > 1 && watched.borrow().quotes % 2 == 1 {
        return Err(malformed(format!(
            "line {line}: a quoted field opened on this record is never closed; it runs \
             from line {line} to the end of the file. Check the quotes on line {line}"
        )));
    }
    batch.flush(sink, true)?;
    Ok(true)
}
