//! The worker side of the parallel check: `I(d)` without uniqueness for a
//! block of whole, quote-free CSV lines (or a batch of records the reader
//! parsed one by one), with no allocation per record in the common case.
//!
//! A block is split into fields (SSE2 masks of newlines and delimiters),
//! then checked column by column: each field's compiled plan runs down its
//! column and answers only where it is sure the value passes (numbers and
//! booleans read as machine words, short `one_of` strings compared as
//! words, fixed-length patterns by table). Anything else (a failing value,
//! an unusual spelling such as `+5` or ` 7`, a token list, a line with the
//! wrong field count or invalid UTF-8) goes through the general code of
//! [`crate::check`], so verdicts, values and messages are exactly those of
//! [`crate::check::Checker::check`]. Uniqueness needs the records
//! before this one, so it is left to the caller, which gets one
//! [`UniqueKey`] per unique field of each record that passed.

use std::ops::Range;

use crate::check::{check_record, malformed_violation, Binding, UniqueKey, Violation};
use crate::pattern::FixedPattern;
use crate::schema::{Bound, Field, OneOf, Schema};
use crate::source::{record_from_line, BlockLayout, Body, Record};
use crate::unique::FastSet;
use crate::value::{append_json_object, write_json_string, write_number_text, FieldType, ValueRef};

/// What a worker found in one block or batch, in record order.
#[derive(Default)]
pub(crate) struct Checked {
    /// One per record.
    pub entries: Vec<Entry>,
    /// The unique keys of every record that passed, `unique_fields` apiece.
    pub keys: Vec<UniqueKey>,
    /// The JSON of every record that passed (only when a store is written),
    /// back to back; `json_ends[i]` ends the i-th.
    pub json: String,
    /// Ends of the JSON objects in `json`.
    pub json_ends: Vec<usize>,
    /// Records that failed: the record (built for block lines; `None` for
    /// a batch, whose record is at the entry's `start`) and its violations.
    pub failed: Vec<(Option<Record>, Vec<Violation>)>,
}

impl Checked {
    fn clear(&mut self) {
        self.entries.clear();
        self.keys.clear();
        self.json.clear();
        self.json_ends.clear();
        self.failed.clear();
    }
}

/// One record's place and verdict (16 bytes: one per record is written
/// and read again, so it is kept small).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    /// Line where the record starts.
    pub line: u64,
    /// Block lines: the record is the line starting at this offset (see
    /// [`line_at`]). Batches: the record's index.
    pub start: u32,
    /// Index into `failed`, or [`PASSED`].
    pub failed: u32,
}

/// The whole line (with its newline) starting at `start` in a block, whose
/// lines all end with a newline.
pub(crate) fn line_at(block: &[u8], start: u32) -> &[u8] {
    let start = start as usize;
    let length =
        crate::bytes::find_byte(&block[start..], b'\n').map_or(block.len() - start, |at| at + 1);
    &block[start..start + length]
}

/// `Entry::failed` of a record that passed everything but uniqueness.
pub(crate) const PASSED: u32 = u32::MAX;

/// How one schema field is typed and checked on the fast path.
struct FieldPlan {
    column: Option<usize>,
    field_type: FieldType,
    required: bool,
    min: Option<Bound>,
    max: Option<Bound>,
    one_of: FastOneOf,
    min_length: Option<usize>,
    max_length: Option<usize>,
    pattern: Option<FixedPattern>,
    unique: bool,
}

enum FastOneOf {
    None,
    Ints(FastSet<i64>),
    /// Few strings, compared one by one.
    Few(Vec<ShortKey>),
    Strings(FastSet<String>),
}

/// A short string, compared without a call to `memcmp`.
struct ShortKey {
    bytes: Box<[u8]>,
    /// The first eight bytes, zero padded (see [`cell_word`]).
    word: u64,
}

impl ShortKey {
    fn new(bytes: &[u8]) -> Self {
        Self {
            bytes: bytes.into(),
            word: word_of(bytes, false),
        }
    }

    #[inline]
    fn is(&self, bytes: &[u8]) -> bool {
        let key = &self.bytes[..];
        let length = key.len();
        if length != bytes.len() {
            return false;
        }
        let word = |slice: &[u8], at: usize| {
            u32::from_le_bytes(slice[at..at + 4].try_into().unwrap_or([0; 4]))
        };
        match length {
            0 => true,
            // First, middle and last byte cover every byte of 1 to 3.
            1..=3 => {
                key[0] == bytes[0]
                    && key[length / 2] == bytes[length / 2]
                    && key[length - 1] == bytes[length - 1]
            }
            // The first and last four bytes (overlapping) cover 4 to 8.
            4..=8 => {
                word(key, 0) == word(bytes, 0) && word(key, length - 4) == word(bytes, length - 4)
            }
            _ => key == bytes,
        }
    }
}

/// The null markers: the empty cell (the default) tested directly.
struct Nulls {
    empty: bool,
    others: Vec<ShortKey>,
}

impl Nulls {
    #[inline]
    fn contains(&self, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return self.empty;
        }
        self.others.iter().any(|null| null.is(bytes))
    }
}

impl FieldPlan {
    fn new(field: &Field, column: Option<usize>) -> Self {
        let one_of = match &field.one_of {
            None => FastOneOf::None,
            Some(OneOf::Ints(allowed)) => FastOneOf::Ints(allowed.clone()),
            Some(OneOf::Strings(allowed)) if allowed.len() <= 8 => {
                let mut few: Vec<&String> = allowed.iter().collect();
                few.sort();
                FastOneOf::Few(
                    few.iter()
                        .map(|text| ShortKey::new(text.as_bytes()))
                        .collect(),
                )
            }
            Some(OneOf::Strings(allowed)) => FastOneOf::Strings(allowed.clone()),
        };
        Self {
            column,
            field_type: field.field_type,
            required: field.required,
            min: field.min,
            max: field.max,
            one_of,
            min_length: field.min_length,
            max_length: field.max_length,
            pattern: field.regex_text.as_deref().and_then(FixedPattern::compile),
            unique: field.unique,
        }
    }

    /// The value of a non-null cell when it is one of the plain spellings
    /// whose value is certain, else `None`.
    #[inline]
    fn value<'a>(&self, text: &'a str) -> Option<ValueRef<'a>> {
        let bytes = text.as_bytes();
        match self.field_type {
            FieldType::Int => parse_int(bytes).map(ValueRef::Int),
            FieldType::Float => parse_float(bytes).map(ValueRef::Float),
            FieldType::Bool => parse_bool(bytes).map(ValueRef::Bool),
            FieldType::String => Some(ValueRef::Str(text)),
            FieldType::Tokens => None,
        }
    }

    /// True only when `check_field` would find no violation in `value`.
    #[inline]
    fn passes(&self, field: &Field, value: &ValueRef<'_>) -> bool {
        match value {
            ValueRef::Null => !self.required,
            ValueRef::Int(integer) => self.int_passes(*integer),
            ValueRef::Float(number) => self.float_passes(*number),
            ValueRef::Bool(_) => true,
            ValueRef::Str(text) => self.text_passes(field, text),
            ValueRef::Tokens(_) => false,
        }
    }

    /// `check_field` on an integer: bounds (exact against integer bounds,
    /// as f64 against float ones) and `one_of`.
    #[inline]
    fn int_passes(&self, integer: i64) -> bool {
        let below = |bound: Bound| match bound {
            Bound::Int(limit) => integer < limit,
            Bound::Float(limit) => (integer as f64) < limit,
        };
        let above = |bound: Bound| match bound {
            Bound::Int(limit) => integer > limit,
            Bound::Float(limit) => integer as f64 > limit,
        };
        if self.min.is_some_and(below) || self.max.is_some_and(above) {
            return false;
        }
        match &self.one_of {
            FastOneOf::Ints(allowed) => allowed.contains(&integer),
            _ => true,
        }
    }

    /// `check_field` on a float: bounds, compared as f64.
    #[inline]
    fn float_passes(&self, number: f64) -> bool {
        !(self.min.is_some_and(|bound| number < bound.as_f64())
            || self.max.is_some_and(|bound| number > bound.as_f64()))
    }

    /// [`FieldPlan::text_passes`] on the cell `text` = `bytes[range]`,
    /// comparing short `one_of` strings as words.
    #[inline]
    fn cell_passes(&self, field: &Field, bytes: &[u8], range: Range<usize>, text: &str) -> bool {
        if let FastOneOf::Few(allowed) = &self.one_of {
            let length = range.end - range.start;
            let found = if length <= 8 {
                let word = cell_word(bytes, range);
                allowed
                    .iter()
                    .any(|item| item.bytes.len() == length && item.word == word)
            } else {
                allowed.iter().any(|item| item.is(text.as_bytes()))
            };
            if !found {
                return false;
            }
        }
        self.text_rest_passes(field, text)
    }

    /// `check_field` on a string: `one_of`, lengths, pattern.
    #[inline]
    fn text_passes(&self, field: &Field, text: &str) -> bool {
        match &self.one_of {
            FastOneOf::Few(allowed) if !allowed.iter().any(|item| item.is(text.as_bytes())) => {
                return false
            }
            _ => {}
        }
        self.text_rest_passes(field, text)
    }

    /// `check_field` on a string after `one_of`: lengths, pattern.
    #[inline]
    fn text_rest_passes(&self, field: &Field, text: &str) -> bool {
        if let FastOneOf::Strings(allowed) = &self.one_of {
            if !allowed.contains(text) {
                return false;
            }
        }
        if self.min_length.is_some() || self.max_length.is_some() {
            let length = if text.is_ascii() {
                text.len()
            } else {
                text.chars().count()
            };
            if self.min_length.is_some_and(|min| length < min)
                || self.max_length.is_some_and(|max| length > max)
            {
                return false;
            }
        }
        if let Some(regex) = &field.regex {
            // A compiled pattern says no to non-ASCII text it cannot
            // judge; the general path then asks the regex.
            let matched = match &self.pattern {
                Some(pattern) => pattern.matches(text.as_bytes()),
                None => regex.is_match(text),
            };
            if !matched {
                return false;
            }
        }
        true
    }
}

/// `i64` from plain decimal digits with an optional minus sign (at most 18
/// digits, so no overflow); other spellings are left to `str::parse`.
fn parse_int(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut value = 0i64;
    for &byte in digits {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value * 10 + i64::from(digit);
    }
    Some(if negative { -value } else { value })
}

const POWERS_OF_TEN: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// `f64` from `[-]digits[.digits]` with at most 15 digits: the digits as
/// an integer and the power of ten are both exact in `f64`, so one division
/// rounds correctly, giving what `str::parse` gives (Clinger's fast path).
/// Other spellings (exponents, `inf`, long mantissas) go to `str::parse`.
fn parse_float(bytes: &[u8]) -> Option<f64> {
    let (negative, body) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    let mut mantissa = 0u64;
    let mut digits = 0usize;
    let mut fraction: Option<usize> = None;
    for &byte in body {
        if byte == b'.' {
            if fraction.is_some() {
                return None;
            }
            fraction = Some(0);
            continue;
        }
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        mantissa = mantissa * 10 + u64::from(digit);
        digits += 1;
        if let Some(count) = &mut fraction {
            *count += 1;
        }
        if digits > 15 {
            return None;
        }
    }
    if digits == 0 {
        return None;
    }
    let value = mantissa as f64 / POWERS_OF_TEN[fraction.unwrap_or(0)];
    Some(if negative { -value } else { value })
}

/// Up to eight bytes as a little-endian word, lowercased when `lower`.
const fn word_of(bytes: &[u8], lower: bool) -> u64 {
    let mut word = 0u64;
    let mut index = 0;
    while index < bytes.len() && index < 8 {
        let byte = if lower {
            bytes[index].to_ascii_lowercase()
        } else {
            bytes[index]
        };
        word |= (byte as u64) << (8 * index);
        index += 1;
    }
    word
}

/// The cell `bytes[range]` of at most eight bytes as a little-endian word,
/// zero padded: one load where eight bytes can be read from its start.
#[inline]
fn cell_word(bytes: &[u8], range: Range<usize>) -> u64 {
    let length = range.end - range.start;
    let word = match bytes[range.start..].first_chunk::<8>() {
        Some(eight) => u64::from_le_bytes(*eight),
        None => word_of(&bytes[range], false),
    };
    if length >= 8 {
        word
    } else {
        word & ((1u64 << (8 * length)) - 1)
    }
}

/// [`parse_int`] of `bytes[range]`; up to eight digits are read as one
/// word and converted without a loop.
#[inline]
fn parse_int_at(bytes: &[u8], range: Range<usize>) -> Option<i64> {
    let (negative, digits) = match bytes.get(range.start) {
        Some(b'-') if range.end - range.start > 1 => (true, range.start + 1..range.end),
        _ => (false, range.clone()),
    };
    let length = digits.end - digits.start;
    if length == 0 || length > 8 {
        return parse_int(&bytes[range]);
    }
    let value = digit_word(cell_word(bytes, digits), length)? as i64;
    Some(if negative { -value } else { value })
}

/// The value of `count` (1 to 8) ASCII digits held in the low bytes of
/// `word`, first digit lowest; `None` when one is not a digit. The SWAR
/// method of simdjson: '0's are put before the digits, all eight bytes
/// are checked at once, and three multiplications sum them.
#[inline]
fn digit_word(word: u64, count: usize) -> Option<u64> {
    let pad = 8 - count;
    let word = if pad == 0 {
        word
    } else {
        (word << (8 * pad)) | (0x3030_3030_3030_3030 & ((1u64 << (8 * pad)) - 1))
    };
    let high = 0xF0F0_F0F0_F0F0_F0F0u64;
    if (word & high) | ((word.wrapping_add(0x0606_0606_0606_0606) & high) >> 4)
        != 0x3333_3333_3333_3333
    {
        return None;
    }
    let mut value = (word & 0x0F0F_0F0F_0F0F_0F0F).wrapping_mul(2561) >> 8;
    value = (value & 0x00FF_00FF_00FF_00FF).wrapping_mul(6_553_601) >> 16;
    Some((value & 0x0000_FFFF_0000_FFFF).wrapping_mul(42_949_672_960_001) >> 32)
}

/// [`parse_float`] of `bytes[range]`: up to eight bytes of digits and one
/// point are read as one word; the point is found and squeezed out there,
/// and the digits converted as in [`parse_int_at`].
#[inline]
fn parse_float_at(bytes: &[u8], range: Range<usize>) -> Option<f64> {
    let (negative, body) = match bytes.get(range.start) {
        Some(b'-') if range.end - range.start > 1 => (true, range.start + 1..range.end),
        _ => (false, range.clone()),
    };
    let length = body.end - body.start;
    if length == 0 || length > 8 {
        return parse_float(&bytes[range]);
    }
    let word = cell_word(bytes, body);
    // High bit of each byte of `word` that is a point (exact, no carries).
    let spread = word ^ 0x2E2E_2E2E_2E2E_2E2E;
    let low7 = 0x7F7F_7F7F_7F7F_7F7Fu64;
    let valid = if length == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * length)) - 1
    };
    let points = !(((spread & low7) + low7) | spread | low7) & valid;
    let (digits, count, fraction) = if points == 0 {
        (word, length, 0)
    } else {
        if points & (points - 1) != 0 {
            return None;
        }
        let point = (points.trailing_zeros() / 8) as usize;
        let below = word & ((1u64 << (8 * point)) - 1);
        let above = if point == 7 {
            0
        } else {
            word >> (8 * (point + 1))
        };
        (below | above << (8 * point), length - 1, length - 1 - point)
    };
    if count == 0 {
        return None;
    }
    let value = digit_word(digits, count)? as f64 / POWERS_OF_TEN[fraction];
    Some(if negative { -value } else { value })
}

/// A spelling of at most seven bytes as its word with its length in the
/// top byte, so that cells with trailing NUL bytes do not compare equal.
const fn spelled(text: &[u8]) -> u64 {
    word_of(text, false) | (text.len() as u64) << 56
}

/// [`parse_bool`] of a cell given as its [`cell_word`] and length, for the
/// usual spellings (all lower, all upper, or capitalised); others give
/// `None` (and go to the general path).
#[inline]
fn parse_bool_word(word: u64, length: usize) -> Option<bool> {
    const TRUE: [u64; 11] = [
        spelled(b"true"),
        spelled(b"True"),
        spelled(b"TRUE"),
        spelled(b"t"),
        spelled(b"T"),
        spelled(b"yes"),
        spelled(b"Yes"),
        spelled(b"YES"),
        spelled(b"y"),
        spelled(b"Y"),
        spelled(b"1"),
    ];
    const FALSE: [u64; 11] = [
        spelled(b"false"),
        spelled(b"False"),
        spelled(b"FALSE"),
        spelled(b"f"),
        spelled(b"F"),
        spelled(b"no"),
        spelled(b"No"),
        spelled(b"NO"),
        spelled(b"n"),
        spelled(b"N"),
        spelled(b"0"),
    ];
    if length == 0 || length > 5 {
        return None;
    }
    let key = word | (length as u64) << 56;
    if TRUE.contains(&key) {
        Some(true)
    } else if FALSE.contains(&key) {
        Some(false)
    } else {
        None
    }
}

fn parse_bool(bytes: &[u8]) -> Option<bool> {
    const TRUE: [u64; 5] = [
        word_of(b"true", false),
        word_of(b"t", false),
        word_of(b"yes", false),
        word_of(b"y", false),
        word_of(b"1", false),
    ];
    const FALSE: [u64; 5] = [
        word_of(b"false", false),
        word_of(b"f", false),
        word_of(b"no", false),
        word_of(b"n", false),
        word_of(b"0", false),
    ];
    if bytes.is_empty() || bytes.len() > 5 {
        return None;
    }
    // The words differ in length where they differ in bytes, and no word
    // has a zero byte, so comparing the zero-padded words compares both.
    let word = word_of(bytes, true);
    if TRUE.contains(&word) {
        Some(true)
    } else if FALSE.contains(&word) {
        Some(false)
    } else {
        None
    }
}

/// Finds the newlines and delimiters of a block 64 bytes at a time: a
/// bit mask per window (a loop the compiler turns into vector compares),
/// then one step per set bit instead of one per byte.
struct Splitter<'a> {
    block: &'a [u8],
    delimiter: u8,
    /// Offset of the current window.
    base: usize,
    /// Newlines and delimiters of the window not yet visited.
    pending: u64,
    /// Newlines of the window.
    newlines: u64,
}

impl<'a> Splitter<'a> {
    fn new(block: &'a [u8], delimiter: u8) -> Self {
        let mut splitter = Self {
            block,
            delimiter,
            base: 0,
            pending: 0,
            newlines: 0,
        };
        splitter.load();
        splitter
    }

    fn load(&mut self) {
        let window = &self.block[self.base.min(self.block.len())..];
        let (newlines, delimiters) = crate::bytes::window_masks(window, b'\n', self.delimiter);
        self.newlines = newlines;
        self.pending = newlines | delimiters;
    }

    /// Pushes where each field after a delimiter of the next line starts
    /// onto `starts` and returns the offset of its newline; `None` at the
    /// end of the block. Blocks are shorter than 4 GiB.
    #[inline]
    fn next_line(&mut self, starts: &mut Vec<u32>) -> Option<usize> {
        loop {
            while self.pending != 0 {
                let bit = self.pending.trailing_zeros();
                self.pending &= self.pending - 1;
                let at = self.base + bit as usize;
                if self.newlines >> bit & 1 == 1 {
                    return Some(at);
                }
                starts.push(at as u32 + 1);
            }
            self.base += 64;
            if self.base >= self.block.len() {
                return None;
            }
            self.load();
        }
    }
}

/// Reused per worker: the block's rows and fields, verdicts, values.
#[derive(Default)]
pub(crate) struct Scratch {
    values: Vec<ValueRef<'static>>,
    /// Non-blank lines of the block.
    rows: Vec<Row>,
    /// Field starts of the plain rows, `width + 1` apiece (the last is
    /// one past the end of the last field).
    bounds: Vec<u32>,
    /// Per plain row: every field so far certainly valid.
    sure: Vec<bool>,
    /// Per plain row, the unique keys.
    keys: Vec<UniqueKey>,
}

/// Empties a vector of values and hands its allocation to another lifetime.
fn recycle<'b>(mut values: Vec<ValueRef<'_>>) -> Vec<ValueRef<'b>> {
    values.clear();
    values.into_iter().map(|_| ValueRef::Null).collect()
}

/// The part of the check each worker runs; shared by all workers.
pub(crate) struct BlockChecker<'s> {
    schema: &'s Schema,
    binding: Binding,
    plans: Vec<FieldPlan>,
    unique_fields: Vec<usize>,
    nulls: Nulls,
    /// `"name":` per field, when accepted records are rendered as JSON.
    json_keys: Option<Vec<String>>,
    /// Whether a record's values are needed whole (rules, JSON), not just
    /// its verdict and unique keys.
    keep_values: bool,
}

impl<'s> BlockChecker<'s> {
    /// A checker for records bound by `binding`; `json_keys` when accepted
    /// records must be rendered for the queue.
    pub(crate) fn new(
        schema: &'s Schema,
        binding: &Binding,
        unique_fields: Vec<usize>,
        json_keys: Option<Vec<String>>,
    ) -> Self {
        let plans = schema
            .fields
            .iter()
            .enumerate()
            .map(|(index, field)| {
                let column = match binding {
                    Binding::Columns(columns) => columns.get(index).copied().flatten(),
                    Binding::Keys => None,
                };
                FieldPlan::new(field, column)
            })
            .collect();
        Self {
            schema,
            binding: binding.clone(),
            keep_values: !schema.rules.is_empty() || json_keys.is_some(),
            plans,
            unique_fields,
            nulls: Nulls {
                empty: schema.source.null_values.iter().any(String::is_empty),
                others: schema
                    .source
                    .null_values
                    .iter()
                    .filter(|null| !null.is_empty())
                    .map(|null| ShortKey::new(null.as_bytes()))
                    .collect(),
            },
            json_keys,
        }
    }

    fn passed(&self, values: &[ValueRef<'_>], out: &mut Checked) {
        for &field in &self.unique_fields {
            out.keys.push(UniqueKey::of(&values[field]));
        }
        if let Some(keys) = &self.json_keys {
            crate::value::append_record_json(&mut out.json, keys, values);
            out.json_ends.push(out.json.len());
        }
    }

    /// Checks a batch of records parsed one by one.
    pub(crate) fn check_records(
        &self,
        records: &[Record],
        binding: &Binding,
        out: &mut Checked,
        scratch: &mut Scratch,
    ) {
        out.clear();
        for (index, record) in records.iter().enumerate() {
            let values = recycle(std::mem::take(&mut scratch.values));
            let failed = match check_record(self.schema, record, binding, values) {
                Ok(values) => {
                    self.passed(&values, out);
                    scratch.values = recycle(values);
                    PASSED
                }
                Err(violations) => {
                    out.failed.push((None, violations));
                    (out.failed.len() - 1) as u32
                }
            };
            out.entries.push(Entry {
                line: record.line,
                start: index as u32,
                failed,
            });
        }
    }

    /// Checks a block of whole, quote-free lines whose first line is
    /// `first_line` of the file.
    ///
    /// Column by column: the lines are first split into fields, then each
    /// field's plan runs down its column (one type, one set of constraints,
    /// so the loop stays tight), marking the rows it cannot pass for sure.
    /// Rows marked, and lines that are not plain (a wrong field count, or
    /// invalid UTF-8 in the block), then go through the general code one by
    /// one.
    pub(crate) fn check_block(
        &self,
        block: &[u8],
        first_line: u64,
        layout: &BlockLayout,
        out: &mut Checked,
        scratch: &mut Scratch,
    ) {
        out.clear();
        // One validation for the block; when it fails, every line is read
        // by the general parser, which finds the field at fault.
        let text = std::str::from_utf8(block).ok();
        let width = layout.expected_columns;
        let rows = &mut scratch.rows;
        let bounds = &mut scratch.bounds;
        rows.clear();
        bounds.clear();
        {
            let mut splitter = Splitter::new(block, layout.delimiter);
            let mut line = first_line;
            let mut start = 0;
            let mut plain_rows = 0u32;
            loop {
                let mark = bounds.len();
                bounds.push(start as u32);
                // The block ends with a newline, so every line has one.
                let Some(end) = splitter.next_line(bounds) else {
                    bounds.truncate(mark);
                    break;
                };
                let row_start = start;
                let row_line = line;
                line += 1;
                start = end + 1;
                let content = &block[row_start..end];
                if content.is_empty() || content == b"\r" {
                    bounds.truncate(mark);
                    continue;
                }
                let plain = text.is_some() && width > 0 && bounds.len() - mark == width;
                let slot = if plain {
                    // Field i spans bounds[i]..bounds[i + 1] - 1; the last
                    // loses one trailing carriage return.
                    let last_end = if block[end - 1] == b'\r' {
                        end - 1
                    } else {
                        end
                    };
                    bounds.push(last_end as u32 + 1);
                    plain_rows += 1;
                    plain_rows - 1
                } else {
                    bounds.truncate(mark);
                    NOT_PLAIN
                };
                rows.push(Row {
                    line: row_line,
                    start: row_start as u32,
                    slot,
                });
            }
        }
        let stride = width + 1;
        let plain_rows = bounds.len() / stride.max(1);
        let unique_count = self.unique_fields.len();
        let sure = &mut scratch.sure;
        sure.clear();
        sure.resize(plain_rows, true);
        let keys = &mut scratch.keys;
        keys.clear();
        keys.resize(plain_rows * unique_count, UniqueKey::Null);
        if let Some(text) = text.filter(|_| plain_rows > 0) {
            let mut unique_slot = 0;
            for (plan, field) in self.plans.iter().zip(&self.schema.fields) {
                self.check_column(
                    plan,
                    field,
                    text,
                    bounds,
                    stride,
                    sure,
                    keys,
                    unique_slot,
                    unique_count,
                );
                unique_slot += usize::from(plan.unique);
            }
        }
        let mut values: Vec<ValueRef<'_>> = recycle(std::mem::take(&mut scratch.values));
        for row in rows.iter() {
            let slot = row.slot as usize;
            let mut passed = row.slot != NOT_PLAIN && sure[slot];
            if passed && self.keep_values {
                // Rules and JSON need the values; the column pass found
                // every one of them certain.
                let text = text.unwrap_or_default();
                let cells = &bounds[slot * stride..(slot + 1) * stride];
                let cell = |plan: &FieldPlan| {
                    let column = plan.column.filter(|&column| column < width)?;
                    let cell = &text[cells[column] as usize..cells[column + 1] as usize - 1];
                    (!self.nulls.contains(cell.as_bytes())).then_some(cell)
                };
                if !self.schema.rules.is_empty() {
                    values.clear();
                    for plan in &self.plans {
                        let value = cell(plan)
                            .and_then(|cell| plan.value(cell))
                            .unwrap_or(ValueRef::Null);
                        values.push(value);
                    }
                    passed = self
                        .schema
                        .rules
                        .iter()
                        .all(|rule| rule.expr.holds(&values) != Some(false));
                }
                if passed {
                    if let Some(json_keys) = &self.json_keys {
                        // Straight from the cells: a number's text is often
                        // its JSON already, and a string needs no parse.
                        append_json_object(&mut out.json, json_keys, |index, json| {
                            let plan = &self.plans[index];
                            match cell(plan) {
                                None => json.push_str("null"),
                                Some(cell) if plan.field_type == FieldType::String => {
                                    write_json_string(json, cell)
                                }
                                Some(cell) => {
                                    if !write_number_text(json, plan.field_type, cell) {
                                        plan.value(cell).unwrap_or(ValueRef::Null).write_json(json);
                                    }
                                }
                            }
                        });
                        out.json_ends.push(out.json.len());
                    }
                }
            }
            let failed = if passed {
                out.keys
                    .extend_from_slice(&keys[slot * unique_count..(slot + 1) * unique_count]);
                PASSED
            } else {
                // The general path decides, with its messages.
                let record = record_from_line(line_at(block, row.start), row.line, layout);
                let verdict = match &record.body {
                    Body::Malformed(fault) => Err(vec![malformed_violation(&record, fault)]),
                    _ => match check_record(
                        self.schema,
                        &record,
                        &self.binding,
                        recycle(std::mem::take(&mut values)),
                    ) {
                        Ok(checked) => {
                            self.passed(&checked, out);
                            values = recycle(checked);
                            Ok(())
                        }
                        Err(violations) => Err(violations),
                    },
                };
                match verdict {
                    Ok(()) => PASSED,
                    Err(violations) => {
                        out.failed.push((Some(record), violations));
                        (out.failed.len() - 1) as u32
                    }
                }
            };
            out.entries.push(Entry {
                line: row.line,
                start: row.start,
                failed,
            });
        }
        scratch.values = recycle(values);
    }

    /// Runs one field's plan down its column of the plain rows: clears
    /// `sure[row]` where the value is not certainly valid, and stores the
    /// unique key of the rest.
    #[allow(clippy::too_many_arguments)]
    fn check_column(
        &self,
        plan: &FieldPlan,
        field: &Field,
        text: &str,
        bounds: &[u32],
        stride: usize,
        sure: &mut [bool],
        keys: &mut [UniqueKey],
        unique_slot: usize,
        unique_count: usize,
    ) {
        let Some(column) = plan.column.filter(|&column| column + 1 < stride) else {
            // An absent column reads as null in every row.
            let passes = plan.passes(field, &ValueRef::Null);
            for flag in sure.iter_mut() {
                *flag &= passes;
            }
            return;
        };
        let null_passes = !plan.required;
        let bytes = text.as_bytes();
        let range = |cells: &[u32]| cells[column] as usize..cells[column + 1] as usize - 1;
        let cell = |cells: &[u32]| &bytes[range(cells)];
        let rows = bounds.chunks_exact(stride).zip(sure.iter_mut()).enumerate();
        // One loop per type, so each runs without re-deciding what to do.
        match plan.field_type {
            FieldType::Int => {
                for (row, (cells, flag)) in rows {
                    let range = range(cells);
                    let cell = &bytes[range.clone()];
                    let key = if self.nulls.contains(cell) {
                        *flag &= null_passes;
                        UniqueKey::Null
                    } else {
                        match parse_int_at(bytes, range) {
                            Some(value) if plan.int_passes(value) => UniqueKey::Int(value),
                            _ => {
                                *flag = false;
                                continue;
                            }
                        }
                    };
                    if plan.unique {
                        keys[row * unique_count + unique_slot] = key;
                    }
                }
            }
            FieldType::Float => {
                for (row, (cells, flag)) in rows {
                    let cell = cell(cells);
                    let value = if self.nulls.contains(cell) {
                        *flag &= null_passes;
                        ValueRef::Null
                    } else {
                        match parse_float_at(bytes, range(cells)) {
                            Some(value) if plan.float_passes(value) => ValueRef::Float(value),
                            _ => {
                                *flag = false;
                                continue;
                            }
                        }
                    };
                    if plan.unique {
                        keys[row * unique_count + unique_slot] = UniqueKey::of(&value);
                    }
                }
            }
            FieldType::Bool => {
                for (row, (cells, flag)) in rows {
                    let cell = cell(cells);
                    let value = if self.nulls.contains(cell) {
                        *flag &= null_passes;
                        ValueRef::Null
                    } else {
                        let range = range(cells);
                        match parse_bool_word(
                            cell_word(bytes, range.clone()),
                            range.end - range.start,
                        ) {
                            Some(value) => ValueRef::Bool(value),
                            None => {
                                *flag = false;
                                continue;
                            }
                        }
                    };
                    if plan.unique {
                        keys[row * unique_count + unique_slot] = UniqueKey::of(&value);
                    }
                }
            }
            FieldType::String => {
                for (row, (cells, flag)) in rows {
                    let range = range(cells);
                    let cell = &text[range.clone()];
                    let value = if self.nulls.contains(cell.as_bytes()) {
                        *flag &= null_passes;
                        ValueRef::Null
                    } else if plan.cell_passes(field, bytes, range, cell) {
                        ValueRef::Str(cell)
                    } else {
                        *flag = false;
                        continue;
                    };
                    if plan.unique {
                        keys[row * unique_count + unique_slot] = UniqueKey::of(&value);
                    }
                }
            }
            // Token lists always take the general path.
            FieldType::Tokens => sure.fill(false),
        }
    }
}

/// A non-blank line of a block.
#[derive(Debug, Clone, Copy)]
struct Row {
    line: u64,
    start: u32,
    /// Index among the plain rows, or [`NOT_PLAIN`].
    slot: u32,
}

/// `Row::slot` of a line with the wrong field count or in a block that is
/// not valid UTF-8.
const NOT_PLAIN: u32 = u32::MAX;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fast_numbers_agree_with_str_parse(
            negative in any::<bool>(),
            whole in "[0-9]{0,12}",
            fraction in proptest::option::of("[0-9]{0,8}"),
        ) {
            let text = format!(
                "{}{whole}{}",
                if negative { "-" } else { "" },
                fraction.map(|digits| format!(".{digits}")).unwrap_or_default()
            );
            if let Some(value) = parse_float(text.as_bytes()) {
                let reference: f64 = text.parse().unwrap();
                prop_assert_eq!(value.to_bits(), reference.to_bits(), "{}", text);
            }
            if let Some(value) = parse_int(text.as_bytes()) {
                prop_assert_eq!(Some(value), text.parse::<i64>().ok(), "{}", text);
            }
        }

        #[test]
        fn fast_values_are_the_general_values(text in "[-+ .0-9a-zA-Z]{0,20}") {
            let bytes = text.as_bytes();
            if let Some(value) = parse_int(bytes) {
                prop_assert_eq!(Some(value), text.trim().parse::<i64>().ok());
            }
            if let Some(value) = parse_float(bytes) {
                prop_assert_eq!(Some(value.to_bits()), text.trim().parse::<f64>().ok().map(f64::to_bits));
            }
            if let Some(flag) = parse_bool(bytes) {
                prop_assert_eq!(flag, matches!(text.trim().to_ascii_lowercase().as_str(), "true" | "t" | "yes" | "y" | "1"));
            }
        }
    }

    #[test]
    fn short_keys_compare_every_byte() {
        let words = [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "abcde",
            "abcdefgh",
            "abcdefghi",
            "alpha",
            "alphb",
            "blpha",
            "alXha",
        ];
        for key in words {
            for text in words {
                assert_eq!(
                    ShortKey::new(key.as_bytes()).is(text.as_bytes()),
                    key == text,
                    "{key} {text}"
                );
            }
        }
        for length in 1..=12 {
            let key = vec![b'x'; length];
            for at in 0..length {
                let mut text = key.clone();
                text[at] = b'y';
                assert!(!ShortKey::new(&key).is(&text), "{length} {at}");
            }
        }
    }

    proptest! {
        #[test]
        fn word_parsers_agree_with_the_byte_parsers(
            text in prop_oneof!["-?[0-9]{0,10}", "-?[0-9]{0,6}\\.?[0-9]{0,6}\\.?[0-9]?", "[-+ 0-9a-zA-Z\\x00/:]{0,9}", "(true|True|TRUE|tRUE|t|yes|YES|y|1|false|False|f|no|NO|n|0)\\x00?"],
            before in 0usize..12,
            after in 0usize..12,
        ) {
            // The cell inside a longer buffer, as in a block, and at its end.
            let mut buffer = vec![b'9'; before];
            buffer.extend_from_slice(text.as_bytes());
            let range = before..before + text.len();
            buffer.extend(std::iter::repeat_n(b'7', after));
            prop_assert_eq!(parse_int_at(&buffer, range.clone()), parse_int(text.as_bytes()));
            prop_assert_eq!(
                parse_float_at(&buffer, range.clone()).map(f64::to_bits),
                parse_float(text.as_bytes()).map(f64::to_bits)
            );
            if text.len() <= 8 {
                prop_assert_eq!(cell_word(&buffer, range.clone()), word_of(text.as_bytes(), false));
                if let Some(flag) = parse_bool_word(cell_word(&buffer, range.clone()), text.len()) {
                    prop_assert_eq!(Some(flag), parse_bool(text.as_bytes()));
                }
            }
        }
    }

    #[test]
    fn usual_boolean_spellings_are_words() {
        for (text, flag) in [
            ("true", true),
            ("False", false),
            ("YES", true),
            ("n", false),
            ("1", true),
        ] {
            assert_eq!(
                parse_bool_word(word_of(text.as_bytes(), false), text.len()),
                Some(flag)
            );
        }
        assert_eq!(parse_bool_word(word_of(b"t\0", false), 2), None);
        assert_eq!(parse_bool_word(0, 0), None);
        assert_eq!(parse_int_at(b"12345678", 0..8), Some(12_345_678));
        assert_eq!(parse_int_at(b"-0", 0..2), Some(0));
        assert_eq!(parse_int_at(b"-", 0..1), None);
        assert_eq!(parse_int_at(b"1\x002", 0..3), None);
        assert_eq!(parse_float_at(b"12.34", 0..5), Some(12.34));
        assert_eq!(parse_float_at(b"-.5", 0..3), Some(-0.5));
        assert_eq!(parse_float_at(b"5.", 0..2), Some(5.0));
        assert_eq!(parse_float_at(b"1234567.", 0..8), Some(1_234_567.0));
        assert_eq!(parse_float_at(b".", 0..1), None);
        assert_eq!(parse_float_at(b"1.2.3", 0..5), None);
        assert_eq!(
            parse_float_at(b"-0.0", 0..4).map(f64::to_bits),
            Some((-0.0f64).to_bits())
        );
    }

    #[test]
    fn plain_spellings_only() {
        assert_eq!(parse_int(b"+5"), None);
        assert_eq!(parse_int(b" 5"), None);
        assert_eq!(parse_int(b"-"), None);
        assert_eq!(parse_int(b"1234567890123456789"), None);
        assert_eq!(parse_float(b"1e5"), None);
        assert_eq!(parse_float(b"."), None);
        assert_eq!(parse_float(b"1.2.3"), None);
        assert_eq!(
            parse_float(b"-0.0").map(f64::to_bits),
            Some((-0.0f64).to_bits())
        );
        assert_eq!(parse_float(b"1234567890123456"), None);
        assert_eq!(parse_float(b"5."), Some(5.0));
        assert_eq!(parse_bool(b"YeS"), Some(true));
        assert_eq!(parse_bool(b"maybe"), None);
    }
}
