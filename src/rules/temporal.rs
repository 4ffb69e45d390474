//! Parsing dates and timestamps without failing the query: a chrono format
//! compiled once per column (`TemporalParser`), a fixed layout read by hand
//! where it can be, and the `parse_date`/`parse_timestamp` UDFs that yield
//! NULL for a value that does not parse.

use super::*;

pub(super) fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date")
}

/// Parses a date with `format`, or ISO 8601 without one.
pub fn parse_date(text: &str, format: Option<&str>) -> Option<NaiveDate> {
    TemporalParser::new(format, Temporal::Date).date(text)
}

/// Parses a timestamp with `format`, or ISO 8601 (`T` or space) without one.
pub fn parse_timestamp(text: &str, format: Option<&str>) -> Option<NaiveDateTime> {
    TemporalParser::new(format, Temporal::Timestamp).timestamp(text)
}

/// The ISO shapes a timestamp without `format` may take (then RFC 3339).
pub(super) const ISO_TIMESTAMPS: [&str; 4] = [
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
];

/// A date or timestamp format read once per column. chrono's `parse_from_str`
/// reads the format string again for every value, which was the largest item of
/// validate's profile; this parses each value exactly as it would. A format of
/// fixed-width numbers and separators also gets a [`Layout`] that reads the
/// common, exact shape of a value without chrono's general parser.
pub struct TemporalParser {
    /// The formats to try, in order, as chrono items and their fast layouts.
    pub(super) formats: Vec<(Vec<Item<'static>>, Option<Layout>)>,
    /// No format given: timestamps fall back to RFC 3339.
    pub(super) iso: bool,
}

impl TemporalParser {
    pub fn new(format: Option<&str>, kind: Temporal) -> TemporalParser {
        let given = format.filter(|f| !f.is_empty());
        let texts: Vec<&str> = match (given, kind) {
            (Some(f), _) => vec![f],
            (None, Temporal::Date) => vec!["%Y-%m-%d"],
            (None, Temporal::Timestamp) => ISO_TIMESTAMPS.to_vec(),
        };
        TemporalParser {
            // The config check refused formats chrono cannot read; an unreadable
            // one here parses nothing, as parse_from_str would.
            formats: texts
                .iter()
                .map(|f| {
                    let items = StrftimeItems::new(f)
                        .parse_to_owned()
                        .unwrap_or_else(|_| vec![Item::Error]);
                    (items, Layout::of(f, kind))
                })
                .collect(),
            iso: given.is_none(),
        }
    }

    pub fn date(&self, text: &str) -> Option<NaiveDate> {
        self.days(text)
            .map(|days| epoch() + chrono::Duration::days(i64::from(days)))
    }

    /// The date as days since 1970-01-01 (Arrow's Date32). Without a format
    /// only `YYYY-MM-DD` itself is a date (chrono's `%m` would take `2020-1-1`).
    pub fn days(&self, text: &str) -> Option<i32> {
        self.formats.iter().find_map(|(items, layout)| {
            if let Some(c) = layout.as_ref().and_then(|l| l.read(text)) {
                return i32::try_from(c.days).ok();
            }
            if self.iso {
                return None;
            }
            let mut parsed = Parsed::new();
            chrono::format::parse(&mut parsed, text, items.iter()).ok()?;
            let date = parsed.to_naive_date().ok()?;
            i32::try_from((date - epoch()).num_days()).ok()
        })
    }

    pub fn timestamp(&self, text: &str) -> Option<NaiveDateTime> {
        self.micros(text)
            .and_then(chrono::DateTime::from_timestamp_micros)
            .map(|t| t.naive_utc())
    }

    /// The timestamp as microseconds since 1970-01-01 00:00 UTC (Arrow's
    /// Timestamp(Microsecond)).
    pub fn micros(&self, text: &str) -> Option<i64> {
        if self.iso && !iso_shaped(text) {
            return None;
        }
        self.formats
            .iter()
            .find_map(|(items, layout)| {
                if let Some(c) = layout.as_ref().and_then(|l| l.read(text)) {
                    return Some(c.micros());
                }
                let mut parsed = Parsed::new();
                chrono::format::parse(&mut parsed, text, items.iter()).ok()?;
                // A value with an offset (`%z`) is stored as UTC, as an ISO
                // value with one is.
                match parsed.offset() {
                    Some(_) => Some(parsed.to_datetime().ok()?.timestamp_micros()),
                    None => {
                        let t = parsed.to_naive_datetime_with_offset(0).ok()?;
                        Some(t.and_utc().timestamp_micros())
                    }
                }
            })
            // With an offset or `Z` (RFC 3339): stored as UTC.
            .or_else(|| {
                self.iso
                    .then(|| chrono::DateTime::parse_from_rfc3339(text).ok())
                    .flatten()
                    .map(|t| t.timestamp_micros())
            })
    }
}

/// Whether `text` starts as ISO 8601 writes a timestamp, every field at its
/// width: `YYYY-MM-DD`, `T` or a space, `HH:MM`. chrono's numeric fields take
/// fewer digits, which a value without a format must not have.
pub(super) fn iso_shaped(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() >= 16
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't' | b' ')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && (b.len() == 16 || (b[16] == b':' && b.len() >= 19 && digits(17..19)))
}

/// A date and time of day as a layout reads them: days since 1970-01-01 and
/// the second of the day, computed without chrono (building its date type and
/// subtracting the epoch were a third of the temporal parsing's time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub(super) days: i64,
    pub(super) second: u32,
}

impl Civil {
    /// A valid proleptic Gregorian date and time (None for Feb 30, hour 24, a
    /// leap second); the day count is Howard Hinnant's `days_from_civil`.
    pub(super) fn new(
        year: i64,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
    ) -> Option<Civil> {
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let month_days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        if day == 0 || day > month_days || hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let year_of_era = y - era * 400;
        let m = i64::from(month);
        let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        Some(Civil {
            days: era * 146_097 + day_of_era - 719_468,
            second: hour * 3600 + minute * 60 + second,
        })
    }

    pub(super) fn micros(self) -> i64 {
        (self.days * 86_400 + i64::from(self.second)) * 1_000_000
    }
}

/// A format made only of `%Y %m %d` (and, for a timestamp, `%H %M` and
/// optionally `%S`, and a final `%.f`) and ASCII separators, as one byte pattern:
/// a value of exactly that shape (every field at its full width, no fraction)
/// is read digit by digit. It answers only for values chrono reads to the same
/// result; anything else (another shape, a field out of range, a leap second)
/// is None and goes to chrono, so no result changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub(super) slots: Vec<Slot>,
    /// Each field's digits: (offset, width, field). A field's digits are
    /// contiguous (a format names a field once).
    fields: Vec<(usize, usize, usize)>,
    /// A layout of up to 32 bytes as masks over four 8-byte words.
    words: Option<Words>,
}

/// A layout's separators and digit places as bit masks over a value's first 32
/// bytes: every byte is checked at once, eight to a word (SWAR), where a loop
/// took a branch a byte (a twentieth of a narrow validate's instructions).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Words {
    /// The separators at their places, zero elsewhere.
    literals: [u64; 4],
    /// 0xFF at each separator's place.
    literal_mask: [u64; 4],
    /// 0xFF at each digit's place.
    digit_mask: [u64; 4],
}

impl Words {
    fn of(slots: &[Slot]) -> Option<Words> {
        if !(8..=32).contains(&slots.len()) {
            return None;
        }
        let mut bytes = [[0u8; 32]; 3];
        for (at, slot) in slots.iter().enumerate() {
            match *slot {
                Slot::Literal(l) => {
                    bytes[0][at] = l;
                    bytes[1][at] = 0xFF;
                }
                Slot::Digit(_) => bytes[2][at] = 0xFF,
            }
        }
        let [literals, literal_mask, digit_mask] = bytes.map(|b| words(&b));
        Some(Words {
            literals,
            literal_mask,
            digit_mask,
        })
    }

    /// Whether `value` (of the layout's length) has every separator in its
    /// place and an ASCII digit in every digit place.
    fn fits(&self, value: &[u8]) -> bool {
        const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
        const ZEROS: u64 = 0x3030_3030_3030_3030;
        const SIX: u64 = 0x0606_0606_0606_0606;
        let value = loaded(value);
        (0..4).all(|i| {
            // Digit places as they are, '0' elsewhere: each byte must be 0x30
            // to 0x39, i.e. 0x3_ and still 0x3_ with 6 added (no carry between
            // bytes: each is at most 0x3F).
            let digits = (value[i] & self.digit_mask[i]) | (ZEROS & !self.digit_mask[i]);
            (value[i] ^ self.literals[i]) & self.literal_mask[i] == 0
                && digits & HIGH == ZEROS
                && (digits + SIX) & HIGH == ZEROS
        })
    }
}

/// `bytes` (8 to 32 of them) as four words, zero past their end. Read in place:
/// a copy into a zeroed buffer first stalled the reads that followed it (a
/// store not forwarded to a wider load).
fn loaded(bytes: &[u8]) -> [u64; 4] {
    let len = bytes.len();
    let word = |from: usize| u64::from_le_bytes(bytes[from..from + 8].try_into().expect("8 bytes"));
    std::array::from_fn(|i| {
        let at = i * 8;
        if at + 8 <= len {
            word(at)
        } else if at < len {
            // The last 8 bytes, shifted down to start at `at`.
            word(len - 8) >> (8 * (at + 8 - len))
        } else {
            0
        }
    })
}

fn words(bytes: &[u8; 32]) -> [u64; 4] {
    std::array::from_fn(|i| {
        u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    Literal(u8),
    /// A digit of field 0..6: year, month, day, hour, minute, second.
    Digit(u8),
}

impl Layout {
    pub(super) fn of(format: &str, kind: Temporal) -> Option<Layout> {
        let format = format.strip_suffix("%.f").unwrap_or(format);
        let mut slots = Vec::new();
        let mut seen = [false; 6];
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c == '%' {
                let (field, width) = match chars.next()? {
                    'Y' => (0, 4),
                    'm' => (1, 2),
                    'd' => (2, 2),
                    'H' => (3, 2),
                    'M' => (4, 2),
                    'S' => (5, 2),
                    _ => return None,
                };
                if std::mem::replace(&mut seen[field], true) {
                    return None;
                }
                slots.extend(std::iter::repeat_n(Slot::Digit(field as u8), width));
            } else if c.is_ascii_punctuation() || c.is_ascii_alphabetic() || c == ' ' {
                slots.push(Slot::Literal(c as u8));
            } else {
                return None;
            }
        }
        let wanted = match kind {
            Temporal::Date => seen == [true, true, true, false, false, false],
            Temporal::Timestamp => seen[..5] == [true; 5],
        };
        if !wanted {
            return None;
        }
        let mut fields: Vec<(usize, usize, usize)> = Vec::new();
        for (at, slot) in slots.iter().enumerate() {
            match *slot {
                Slot::Literal(_) => {}
                Slot::Digit(f) => match fields.last_mut() {
                    Some((start, width, field))
                        if *field == usize::from(f) && *start + *width == at =>
                    {
                        *width += 1
                    }
                    _ => fields.push((at, 1, usize::from(f))),
                },
            }
        }
        Some(Layout {
            words: Words::of(&slots),
            slots,
            fields,
        })
    }

    /// The value when `text` has exactly this shape and valid fields (a date
    /// layout gives midnight).
    pub(super) fn read(&self, text: &str) -> Option<Civil> {
        let bytes = text.as_bytes();
        if bytes.len() != self.slots.len() {
            return None;
        }
        if !self.fits(bytes) {
            return None;
        }
        let mut fields = [0u32; 6];
        for &(at, width, field) in &self.fields {
            fields[field] =
                (bytes[at..at + width].iter()).fold(0, |n, &d| n * 10 + u32::from(d - b'0'));
        }
        let [year, month, day, hour, minute, second] = fields;
        // A leap second (60) is refused here and left to chrono's parser.
        Civil::new(i64::from(year), month, day, hour, minute, second)
    }

    /// Whether `bytes` have the layout's length, its separators in their
    /// places and ASCII digits in the others.
    pub(super) fn fits(&self, bytes: &[u8]) -> bool {
        match &self.words {
            Some(words) => bytes.len() == self.slots.len() && words.fits(bytes),
            None => self.fits_bytewise(bytes),
        }
    }

    /// [`Layout::fits`] a byte at a time (layouts over 32 bytes).
    pub(super) fn fits_bytewise(&self, bytes: &[u8]) -> bool {
        bytes.len() == self.slots.len()
            && (bytes.iter().zip(&self.slots)).all(|(&b, slot)| match *slot {
                Slot::Literal(l) => b == l,
                Slot::Digit(_) => b.is_ascii_digit(),
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Temporal {
    Date,
    Timestamp,
}

pub(super) fn parse_udf(kind: Temporal) -> ScalarUDF {
    ScalarUDF::from(ParseTemporal {
        kind,
        signature: Signature::any(2, Volatility::Immutable),
    })
}

/// `parse_date(text, format)` / `parse_timestamp(text, format)`: the text without
/// its surrounding blanks parsed, null instead of an error when it does not parse
/// (DataFusion's `to_date` fails the query).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct ParseTemporal {
    pub(super) kind: Temporal,
    pub(super) signature: Signature,
}

impl ScalarUDFImpl for ParseTemporal {
    fn name(&self) -> &str {
        match self.kind {
            Temporal::Date => "parse_date",
            Temporal::Timestamp => "parse_timestamp",
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(match self.kind {
            Temporal::Date => DataType::Date32,
            Temporal::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        if let Some(values) = native(&args.args[0], n)? {
            let to = match self.kind {
                Temporal::Date => DataType::Date32,
                Temporal::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            };
            let cast = datafusion::arrow::compute::cast(&values, &to)?;
            return Ok(ColumnarValue::Array(within_range(&cast, self.kind)));
        }
        let values = text_array(&args.args[0], n)?;
        let format = match &args.args[1] {
            ColumnarValue::Scalar(s) => s.to_string(),
            ColumnarValue::Array(_) => String::new(),
        };
        let format = (!format.is_empty() && format != "NULL").then_some(format.as_str());
        let parser = TemporalParser::new(format, self.kind);
        let out: ArrayRef = match self.kind {
            Temporal::Date => {
                let mut b = Date32Builder::with_capacity(n);
                for v in values.iter() {
                    b.append_option(v.and_then(|v| parser.days(strip(v))));
                }
                Arc::new(b.finish())
            }
            Temporal::Timestamp => {
                let mut b = TimestampMicrosecondBuilder::with_capacity(n);
                for v in values.iter() {
                    b.append_option(v.and_then(|v| parser.micros(strip(v))));
                }
                Arc::new(b.finish())
            }
        };
        Ok(ColumnarValue::Array(within_range(&out, self.kind)))
    }
}

/// Days from 1970-01-01 of the first and last date every reader of the rows
/// can hold: 0001-01-01 and 9999-12-31 (PostgreSQL starts at 4713 BC, but
/// delta-rs's statistics and chrono panic or overflow on Arrow's extremes).
pub(super) const DAYS: std::ops::RangeInclusive<i32> = -719_162..=2_932_896;
/// The same bounds in microseconds: 0001-01-01 00:00 to 9999-12-31 23:59:59.999999.
pub(super) const MICROS: std::ops::RangeInclusive<i64> =
    -62_135_596_800_000_000..=253_402_300_799_999_999;

/// `values` with every date or timestamp outside [`DAYS`] / [`MICROS`] made
/// null: then the column's format check quarantines the row.
fn within_range(values: &ArrayRef, kind: Temporal) -> ArrayRef {
    use datafusion::arrow::datatypes::{Date32Type, TimestampMicrosecondType};
    match kind {
        Temporal::Date => Arc::new(
            values
                .as_primitive::<Date32Type>()
                .unary_opt::<_, Date32Type>(|d| DAYS.contains(&d).then_some(d)),
        ),
        Temporal::Timestamp => Arc::new(
            values
                .as_primitive::<TimestampMicrosecondType>()
                .unary_opt::<_, TimestampMicrosecondType>(|t| MICROS.contains(&t).then_some(t)),
        ),
    }
}
