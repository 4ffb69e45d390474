//! The rule plan's own scalar functions: text trimming and case, key
//! fingerprints and the repeated-key lookup, `row_errors` (the per-row list of
//! broken rules), and their encoding for plans sent to another process.

use super::*;

/// Blank characters around a value, removed without copying it.
pub(super) fn strip(text: &str) -> &str {
    let blank = |b: &u8| BLANK.as_bytes().contains(b);
    let bytes = text.as_bytes();
    let start = bytes.iter().position(|b| !blank(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !blank(b))
        .map_or(start, |e| e + 1);
    // The blanks are ASCII, so both ends are character boundaries.
    &text[start..end]
}

/// The checks and casts every text value goes through, each one function that
/// reads the value once and trims it in place. As DataFusion expressions
/// (`btrim`, `= ''`, `TRY_CAST`, `isnan`, `abs`) each step built a new array of
/// every value: they were a fifth of validate's time on a wide file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum TextFn {
    /// `is_blank(text)`: null, empty or only blanks; never null.
    Blank,
    /// `parse_int(text)`: the trimmed text as a 64-bit integer, as `TRY_CAST` reads it.
    Int,
    /// `parse_float(text)`: the trimmed text as a finite double, as `TRY_CAST`
    /// reads it; null for NaN and infinities.
    Float,
    /// `has_nul(text)`: the text holds a NUL byte; never null.
    Nul,
}

impl TextFn {
    const ALL: [TextFn; 4] = [TextFn::Blank, TextFn::Int, TextFn::Float, TextFn::Nul];

    pub(super) fn name(self) -> &'static str {
        match self {
            TextFn::Blank => "is_blank",
            TextFn::Int => "parse_int",
            TextFn::Float => "parse_float",
            TextFn::Nul => "has_nul",
        }
    }
}

pub(super) fn text_udf(f: TextFn) -> ScalarUDF {
    ScalarUDF::from(TextUdf {
        f,
        signature: Signature::any(1, Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct TextUdf {
    pub(super) f: TextFn,
    pub(super) signature: Signature,
}

impl ScalarUDFImpl for TextUdf {
    fn name(&self) -> &str {
        self.f.name()
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(match self.f {
            TextFn::Blank | TextFn::Nul => DataType::Boolean,
            TextFn::Int => DataType::Int64,
            TextFn::Float => DataType::Float64,
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        use datafusion::arrow::array::{Float64Array, Int64Array};
        use datafusion::arrow::buffer::BooleanBuffer;
        use datafusion::arrow::compute::kernels::cast_utils::Parser;
        use datafusion::arrow::datatypes::{Float64Type, Int64Type};
        let n = args.number_rows;
        if let Some(values) = native(&args.args[0], n)? {
            use datafusion::arrow::compute::{cast, is_null};
            let out: ArrayRef = match self.f {
                TextFn::Blank => Arc::new(is_null(&values)?),
                TextFn::Nul => Arc::new(BooleanArray::new(BooleanBuffer::new_unset(n), None)),
                TextFn::Int => cast(&values, &DataType::Int64)?,
                TextFn::Float => Arc::new(
                    cast(&values, &DataType::Float64)?
                        .as_any()
                        .downcast_ref::<Float64Array>()
                        .expect("cast to Float64")
                        .iter()
                        .map(|v| v.filter(|x| x.is_finite()))
                        .collect::<Float64Array>(),
                ),
            };
            return Ok(ColumnarValue::Array(out));
        }
        let values = text_array(&args.args[0], n)?;
        let out: ArrayRef = match self.f {
            TextFn::Blank => Arc::new(BooleanArray::new(
                BooleanBuffer::collect_bool(n, |i| values.is_null(i) || is_blank(values.value(i))),
                None,
            )),
            TextFn::Nul => {
                // One search of the batch's bytes; rows are looked at only when
                // it finds a NUL (strpos built an integer per row to compare).
                let offsets = values.value_offsets();
                let bytes = &values.value_data()[offsets[0] as usize..offsets[n] as usize];
                let found = if bytes.contains(&0) {
                    BooleanBuffer::collect_bool(n, |i| {
                        values.is_valid(i) && values.value(i).as_bytes().contains(&0)
                    })
                } else {
                    BooleanBuffer::new_unset(n)
                };
                Arc::new(BooleanArray::new(found, None))
            }
            TextFn::Int => Arc::new(
                values
                    .iter()
                    .map(|v| v.and_then(|v| Int64Type::parse(strip(v))))
                    .collect::<Int64Array>(),
            ),
            TextFn::Float => Arc::new(
                values
                    .iter()
                    .map(|v| {
                        v.and_then(|v| Float64Type::parse(strip(v)))
                            .filter(|x| x.is_finite())
                    })
                    .collect::<Float64Array>(),
            ),
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// `key_fingerprint(v1, v2, ...)`: a 128-bit XXH3 hash of a row's typed key
/// values, null when any of them is null (a key with a null part takes no part
/// in uniqueness). Equal keys have equal fingerprints; two different keys share
/// one with a chance near n²/2¹²⁹ for n keys (about 10⁻²⁴ for 30 million), so
/// uniqueness groups and joins on this one 16-byte value instead of on every
/// key column: the key pass holds 16 bytes a key whatever the key's width.
pub fn key_fingerprint(values: Vec<Expr>) -> Expr {
    ScalarUDF::from(KeyFingerprint::new()).call(values)
}

/// [`key_fingerprint`] as a function SQL can call by its name.
pub fn key_fingerprint_udf() -> ScalarUDF {
    ScalarUDF::from(KeyFingerprint::new())
}

/// The type of a key fingerprint: 128 bits as a decimal, so that grouping and
/// joining on it take DataFusion's paths for one primitive column.
pub(super) fn fingerprint_type() -> DataType {
    DataType::Decimal128(38, 0)
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct KeyFingerprint {
    pub(super) signature: Signature,
}

impl KeyFingerprint {
    pub(super) fn new() -> KeyFingerprint {
        KeyFingerprint {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for KeyFingerprint {
    fn name(&self) -> &str {
        "key_fingerprint"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(fingerprint_type())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        use datafusion::arrow::array::Decimal128Builder;
        let n = args.number_rows;
        let arrays = args
            .args
            .iter()
            .map(|a| key_part(a.to_array(n)?))
            .collect::<DfResult<Vec<_>>>()?;
        let mut out = Decimal128Builder::with_capacity(n);
        let mut row_bytes = Vec::with_capacity(64);
        'rows: for row in 0..n {
            row_bytes.clear();
            for part in &arrays {
                if !part.append(row, &mut row_bytes) {
                    out.append_null();
                    continue 'rows;
                }
            }
            out.append_value(twox_hash::XxHash3_128::oneshot(&row_bytes) as i128);
        }
        let out = out.finish().with_data_type(fingerprint_type());
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// `repeated_key(fingerprint)`: whether a row's key fingerprint
/// ([`key_fingerprint`]) is one the pre-pass found more than once in the file
/// (null for a null fingerprint). The main pass of a file with repeated keys
/// flags its rows with this lookup instead of joining the duplicated keys: a
/// join copied every column of every row to add one flag.
pub fn repeated_key(repeated: Vec<i128>, fingerprint: Expr) -> Expr {
    ScalarUDF::from(RepeatedKey::new(repeated)).call(vec![fingerprint])
}

/// The bytes [`repeated_key`] holds for `keys` fingerprints: 16 a key, and its
/// index of at most 4 a key.
pub fn repeated_key_bytes(keys: usize) -> usize {
    keys * 16 + RepeatedKey::index_len(keys) * 4
}

/// The fingerprints sorted, and an index of where each value of their top
/// `bits` bits starts: fingerprints are uniform hashes, so a lookup reads the
/// index and one or two fingerprints (a hash set would take up to twice the
/// bytes).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct RepeatedKey {
    pub(super) repeated: Vec<u128>,
    pub(super) bits: u32,
    pub(super) starts: Vec<u32>,
    pub(super) signature: Signature,
}

impl RepeatedKey {
    pub(super) fn new(repeated: Vec<i128>) -> RepeatedKey {
        let mut repeated: Vec<u128> = repeated.into_iter().map(|fp| fp as u128).collect();
        repeated.sort_unstable();
        repeated.dedup();
        let bits = Self::index_bits(repeated.len());
        let mut starts = Vec::with_capacity((1 << bits) + 1);
        let mut at = 0;
        for top in 0..=(1u128 << bits) {
            while at < repeated.len() && Self::top(repeated[at], bits) < top {
                at += 1;
            }
            starts.push(at as u32);
        }
        RepeatedKey {
            repeated,
            bits,
            starts,
            signature: Signature::exact(vec![fingerprint_type()], Volatility::Immutable),
        }
    }

    /// The top bits indexed for `keys` fingerprints: 2^bits ≤ `keys`, at most 2²⁰.
    pub(super) fn index_bits(keys: usize) -> u32 {
        keys.max(1).ilog2().min(20)
    }

    /// The index's entries: where each value of the top bits starts, and the end.
    pub(super) fn index_len(keys: usize) -> usize {
        (1usize << Self::index_bits(keys)) + 1
    }

    pub(super) fn top(fp: u128, bits: u32) -> u128 {
        fp.checked_shr(128 - bits).unwrap_or(0)
    }

    pub(super) fn contains(&self, fp: i128) -> bool {
        let fp = fp as u128;
        let top = Self::top(fp, self.bits) as usize;
        let (from, to) = (self.starts[top] as usize, self.starts[top + 1] as usize);
        self.repeated[from..to].binary_search(&fp).is_ok()
    }
}

impl std::hash::Hash for RepeatedKey {
    /// Its size and ends: equal ones hash alike, and a plan's hashing does not
    /// read millions of fingerprints.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.repeated.len().hash(state);
        self.repeated.first().hash(state);
        self.repeated.last().hash(state);
    }
}

impl ScalarUDFImpl for RepeatedKey {
    fn name(&self) -> &str {
        "repeated_key"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let fingerprints = args.args[0].to_array(args.number_rows)?;
        let fingerprints = fingerprints.as_primitive::<Decimal128Type>();
        let flags: BooleanArray = fingerprints
            .iter()
            .map(|fp| fp.map(|fp| self.contains(fp)))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(flags)))
    }
}

/// One key column's values as the bytes a fingerprint hashes: fixed-width
/// values (numbers, dates, times, decimals) as their native bytes, booleans as
/// one byte, text as its length and its bytes (so `("ab", "c")` and `("a", "bc")`
/// differ).
pub(super) enum KeyPart {
    Fixed {
        data: datafusion::arrow::array::ArrayData,
        width: usize,
    },
    Bool(BooleanArray),
    Text(StringArray),
}

pub(super) fn key_part(array: ArrayRef) -> DfResult<KeyPart> {
    let ty = array.data_type();
    Ok(if ty.is_primitive() {
        KeyPart::Fixed {
            width: ty.primitive_width().expect("primitive types have a width"),
            data: array.to_data(),
        }
    } else if let Some(b) = array.as_any().downcast_ref::<BooleanArray>() {
        KeyPart::Bool(b.clone())
    } else {
        let text = datafusion::arrow::compute::cast(&array, &DataType::Utf8)?;
        KeyPart::Text(
            text.as_any()
                .downcast_ref::<StringArray>()
                .expect("cast to Utf8 gives a StringArray")
                .clone(),
        )
    })
}

impl KeyPart {
    /// Appends the row's value; false when it is null.
    pub(super) fn append(&self, row: usize, out: &mut Vec<u8>) -> bool {
        match self {
            KeyPart::Fixed { data, width } => {
                if data.is_null(row) {
                    return false;
                }
                let at = (data.offset() + row) * width;
                out.extend_from_slice(&data.buffers()[0].as_slice()[at..at + width]);
            }
            KeyPart::Bool(b) => {
                if b.is_null(row) {
                    return false;
                }
                out.push(u8::from(b.value(row)));
            }
            KeyPart::Text(t) => {
                if t.is_null(row) {
                    return false;
                }
                let v = t.value(row).as_bytes();
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                out.extend_from_slice(v);
            }
        }
        true
    }
}

/// The rule functions as bytes, for plans run in another process (Ballista):
/// None for any other function.
pub fn encode_udf(udf: &ScalarUDF) -> Option<Vec<u8>> {
    let inner = udf.inner();
    if let Some(e) = inner.downcast_ref::<RowErrors>() {
        return serde_json::to_vec(&e.meta).ok();
    }
    if let Some(r) = inner.downcast_ref::<RepeatedKey>() {
        return Some(r.repeated.iter().flat_map(|fp| fp.to_le_bytes()).collect());
    }
    (inner.is::<ParseTemporal>() || inner.is::<TextUdf>() || inner.is::<KeyFingerprint>())
        .then(|| b"[]".to_vec())
}

/// A rule function [`encode_udf`] wrote; None when `name` is not one of ours.
pub fn decode_udf(name: &str, bytes: &[u8]) -> Option<DfResult<ScalarUDF>> {
    Some(Ok(match name {
        "parse_date" => parse_udf(Temporal::Date),
        "parse_timestamp" => parse_udf(Temporal::Timestamp),
        "key_fingerprint" => ScalarUDF::from(KeyFingerprint::new()),
        "repeated_key" => ScalarUDF::from(RepeatedKey::new(
            bytes
                .chunks_exact(16)
                .map(|b| i128::from_le_bytes(b.try_into().expect("16 bytes")))
                .collect(),
        )),
        _ if let Some(f) = TextFn::ALL.into_iter().find(|f| f.name() == name) => text_udf(f),
        "row_errors" => match serde_json::from_slice(bytes) {
            Ok(meta) => ScalarUDF::from(RowErrors {
                meta,
                signature: Signature::variadic_any(Volatility::Immutable),
            }),
            Err(e) => return Some(Err(crate::remote::json_error(e))),
        },
        _ => return None,
    }))
}

/// The argument's values when they are not text: a column the file holds in
/// its declared type (see `validate::source::Spec::native`).
pub(super) fn native(v: &ColumnarValue, rows: usize) -> DfResult<Option<ArrayRef>> {
    let text = matches!(
        v.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    );
    (!text).then(|| v.to_array(rows)).transpose()
}

pub(super) fn text_array(v: &ColumnarValue, rows: usize) -> DfResult<StringArray> {
    let array = v.to_array(rows)?;
    let array = datafusion::arrow::compute::cast(&array, &DataType::Utf8)?;
    Ok(array
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("cast to Utf8 gives a StringArray")
        .clone())
}

/// `row_errors(flag1, value1, flag2, value2, ...)`: the list of a row's failed
/// checks as {column, rule, value, message}; column, rule and message come from
/// the compiled checks, in the same order as the arguments.
pub fn row_errors(checks: &[Check]) -> Expr {
    let meta: Vec<(String, String, String)> = checks
        .iter()
        .map(|c| (c.column.clone(), c.rule.to_owned(), c.message.clone()))
        .collect();
    let args = checks
        .iter()
        .flat_map(|c| [c.test.clone(), c.value.clone()])
        .collect();
    ScalarUDF::from(RowErrors {
        meta,
        signature: Signature::variadic_any(Volatility::Immutable),
    })
    .call(args)
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct RowErrors {
    pub(super) meta: Vec<(String, String, String)>,
    pub(super) signature: Signature,
}

impl ScalarUDFImpl for RowErrors {
    fn name(&self) -> &str {
        "row_errors"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(errors_type())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        use datafusion::arrow::buffer::BooleanBuffer;
        let n = args.number_rows;
        // Each check's failing rows (a null flag is not a failure), and the rows
        // failing any: most rows fail none, so a value (native in a Parquet
        // file) is turned to text only in a failing row.
        let mut flags: Vec<BooleanBuffer> = Vec::new();
        let mut values: Vec<Option<ArrayRef>> = Vec::new();
        for pair in args.args.chunks(2) {
            let f = pair[0].to_array(n)?;
            let f = f
                .as_any()
                .downcast_ref::<BooleanArray>()
                .expect("flags are boolean");
            let failing = match f.nulls() {
                Some(valid) => f.values() & valid.inner(),
                None => f.values().clone(),
            };
            // A check failing in many rows has its values cast at once, not
            // row by row (a file of bad values is read as fast as before).
            // (A value no calendar holds fails the cast: then row by row, where
            // `text_at` shows its stored number.)
            values.push(match failing.count_set_bits() {
                0 => None,
                some if some * 16 > n => {
                    let array = pair[1].to_array(n)?;
                    Some(datafusion::arrow::compute::cast(&array, &DataType::Utf8).unwrap_or(array))
                }
                _ => Some(pair[1].to_array(n)?),
            });
            flags.push(failing);
        }
        let any = flags
            .iter()
            .fold(BooleanBuffer::new_unset(n), |acc, f| &acc | f);
        let fields = error_fields();
        let builders: Vec<Box<dyn datafusion::arrow::array::ArrayBuilder>> = vec![
            Box::new(StringBuilder::new()),
            Box::new(StringBuilder::new()),
            Box::new(StringBuilder::new()),
            Box::new(StringBuilder::new()),
        ];
        let mut list = ListBuilder::new(StructBuilder::new(fields.clone(), builders)).with_field(
            Arc::new(Field::new("element", DataType::Struct(fields), true)),
        );
        for row in 0..n {
            if !any.value(row) {
                list.append(true);
                continue;
            }
            for (i, (column, rule, message)) in self.meta.iter().enumerate() {
                let Some(v) = values[i].as_ref().filter(|_| flags[i].value(row)) else {
                    continue;
                };
                let s = list.values();
                s.field_builder::<StringBuilder>(0)
                    .expect("column")
                    .append_value(column);
                s.field_builder::<StringBuilder>(1)
                    .expect("rule")
                    .append_value(rule);
                s.field_builder::<StringBuilder>(2)
                    .expect("value")
                    .append_option(text_at(v, row)?);
                s.field_builder::<StringBuilder>(3)
                    .expect("message")
                    .append_value(message);
                s.append(true);
            }
            list.append(true);
        }
        Ok(ColumnarValue::Array(Arc::new(list.finish())))
    }
}
