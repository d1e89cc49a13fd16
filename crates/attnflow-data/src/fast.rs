//! The worker side of the parallel check: `I(d)` without uniqueness for a
//! block of whole, quote-free CSV lines (or a batch of records the reader
//! parsed one by one), with no allocation per record in the common case.
//!
//! Each cell is typed and checked by a compiled plan that answers only when
//! it is sure the value passes; anything else (a failing value, an unusual
//! spelling such as `+5` or ` 7`, a token list) goes through the general
//! code of [`crate::check`], so verdicts, values and messages are exactly
//! those of [`crate::check::Checker::check`]. Uniqueness needs the records
//! before this one, so it is left to the caller, which gets one
//! [`UniqueKey`] per unique field of each record that passed.

use crate::check::{
    check_record, check_typed, malformed_violation, type_cell, Binding, UniqueKey, Violation,
};
use crate::pattern::FixedPattern;
use crate::schema::{Bound, Field, OneOf, Schema};
use crate::source::{record_from_line, BlockLayout, Body, Record};
use crate::unique::FastSet;
use crate::value::{FieldType, ValueRef};

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

/// One record's place and verdict.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    /// Line where the record starts.
    pub line: u64,
    /// Block lines: the record's bytes are `block[start..end]`. Batches:
    /// `start` is the record's index.
    pub start: usize,
    /// See `start`.
    pub end: usize,
    /// Index into `failed`, or [`PASSED`].
    pub failed: u32,
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
}

impl ShortKey {
    fn new(bytes: &[u8]) -> Self {
        Self {
            bytes: bytes.into(),
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
    fn passes(&self, field: &Field, value: &ValueRef<'_>) -> bool {
        if *value == ValueRef::Null {
            return !self.required;
        }
        if let Some(number) = value.as_f64() {
            let below = |bound: Bound| match (value, bound) {
                (ValueRef::Int(integer), Bound::Int(limit)) => *integer < limit,
                (_, bound) => number < bound.as_f64(),
            };
            let above = |bound: Bound| match (value, bound) {
                (ValueRef::Int(integer), Bound::Int(limit)) => *integer > limit,
                (_, bound) => number > bound.as_f64(),
            };
            if self.min.is_some_and(below) || self.max.is_some_and(above) {
                return false;
            }
        }
        match (value, &self.one_of) {
            (ValueRef::Int(integer), FastOneOf::Ints(allowed)) if !allowed.contains(integer) => {
                return false
            }
            (ValueRef::Str(text), FastOneOf::Few(allowed))
                if !allowed.iter().any(|item| item.is(text.as_bytes())) =>
            {
                return false
            }
            (ValueRef::Str(text), FastOneOf::Strings(allowed)) if !allowed.contains(*text) => {
                return false
            }
            _ => {}
        }
        if let ValueRef::Str(text) = value {
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

fn parse_bool(bytes: &[u8]) -> Option<bool> {
    if bytes.is_empty() || bytes.len() > 5 {
        return None;
    }
    let mut word = [0u8; 5];
    for (lower, byte) in word.iter_mut().zip(bytes) {
        *lower = byte.to_ascii_lowercase();
    }
    match &word[..bytes.len()] {
        b"true" | b"t" | b"yes" | b"y" | b"1" => Some(true),
        b"false" | b"f" | b"no" | b"n" | b"0" => Some(false),
        _ => None,
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

    /// Pushes the delimiters of the next line onto `delimiters` and returns
    /// the offset of its newline; `None` at the end of the block.
    #[inline]
    fn next_line(&mut self, delimiters: &mut Vec<usize>) -> Option<usize> {
        loop {
            while self.pending != 0 {
                let bit = self.pending.trailing_zeros();
                self.pending &= self.pending - 1;
                let at = self.base + bit as usize;
                if self.newlines >> bit & 1 == 1 {
                    return Some(at);
                }
                delimiters.push(at);
            }
            self.base += 64;
            if self.base >= self.block.len() {
                return None;
            }
            self.load();
        }
    }
}

/// Reused per worker: field offsets of the current line and typed values.
#[derive(Default)]
pub(crate) struct Scratch {
    delimiters: Vec<usize>,
    values: Vec<ValueRef<'static>>,
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
            crate::run::append_record_json(&mut out.json, keys, values);
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
                start: index,
                end: index,
                failed,
            });
        }
    }

    /// Checks a block of whole, quote-free lines whose first line is
    /// `first_line` of the file.
    pub(crate) fn check_block(
        &self,
        block: &[u8],
        first_line: u64,
        layout: &BlockLayout,
        out: &mut Checked,
        scratch: &mut Scratch,
    ) {
        out.clear();
        // One validation for the block; lines are checked one by one only
        // when it fails (their fields are then re-read by the general parser).
        let text = std::str::from_utf8(block).ok();
        let mut line = first_line;
        let mut start = 0;
        let delimiters = &mut scratch.delimiters;
        let mut values: Vec<ValueRef<'_>> = recycle(std::mem::take(&mut scratch.values));
        let mut splitter = Splitter::new(block, layout.delimiter);
        while start < block.len() {
            delimiters.clear();
            // The block ends with a newline, so every line has one.
            let Some(end) = splitter.next_line(delimiters) else {
                break;
            };
            let this_line = line;
            let record_start = start;
            line += 1;
            start = end + 1;
            let content = &block[record_start..end];
            if content.is_empty() || content == b"\r" {
                continue;
            }
            let fields = delimiters.len() + 1;
            let plain =
                text.filter(|_| layout.expected_columns == 0 || fields == layout.expected_columns);
            let passed = match plain {
                Some(text) => {
                    // The last field loses one trailing carriage return.
                    let last_end = if block[end - 1] == b'\r' {
                        end - 1
                    } else {
                        end
                    };
                    let cell = |column: usize| -> Option<&str> {
                        if column >= fields {
                            return None;
                        }
                        let from = if column == 0 {
                            record_start
                        } else {
                            delimiters[column - 1] + 1
                        };
                        let to = if column + 1 == fields {
                            last_end.max(from)
                        } else {
                            delimiters[column]
                        };
                        Some(&text[from..to])
                    };
                    values.clear();
                    let keys_before = out.keys.len();
                    let mut sure = true;
                    for (plan, field) in self.plans.iter().zip(&self.schema.fields) {
                        let value = match plan.column.and_then(cell) {
                            None => ValueRef::Null,
                            Some(text) if self.nulls.contains(text.as_bytes()) => ValueRef::Null,
                            Some(text) => match plan.value(text) {
                                Some(value) => value,
                                None => {
                                    sure = false;
                                    break;
                                }
                            },
                        };
                        if !plan.passes(field, &value) {
                            sure = false;
                            break;
                        }
                        if plan.unique {
                            out.keys.push(UniqueKey::of(&value));
                        }
                        if self.keep_values {
                            values.push(value);
                        }
                    }
                    let sure = sure
                        && self
                            .schema
                            .rules
                            .iter()
                            .all(|rule| rule.expr.holds(&values) != Some(false));
                    if sure {
                        if let Some(keys) = &self.json_keys {
                            crate::run::append_record_json(&mut out.json, keys, &values);
                            out.json_ends.push(out.json.len());
                        }
                        true
                    } else {
                        out.keys.truncate(keys_before);
                        // The general path decides, with its messages.
                        let typed =
                            self.plans
                                .iter()
                                .zip(&self.schema.fields)
                                .map(|(plan, field)| {
                                    type_cell(self.schema, field, plan.column.and_then(cell))
                                });
                        match check_typed(self.schema, typed, recycle(std::mem::take(&mut values)))
                        {
                            Ok(checked) => {
                                self.passed(&checked, out);
                                values = checked;
                                true
                            }
                            Err(violations) => {
                                let record =
                                    record_from_line(&block[record_start..=end], this_line, layout);
                                out.failed.push((Some(record), violations));
                                false
                            }
                        }
                    }
                }
                None => {
                    // Invalid UTF-8 somewhere in the block, or a wrong
                    // column count: the general parser builds the record.
                    let record = record_from_line(&block[record_start..=end], this_line, layout);
                    let verdict = match &record.body {
                        Body::Malformed(fault) => Err(vec![malformed_violation(&record, fault)]),
                        _ => match check_record(self.schema, &record, &self.binding, Vec::new()) {
                            Ok(checked) => {
                                self.passed(&checked, out);
                                Ok(())
                            }
                            Err(violations) => Err(violations),
                        },
                    };
                    match verdict {
                        Ok(()) => {
                            out.entries.push(Entry {
                                line: this_line,
                                start: record_start,
                                end: end + 1,
                                failed: PASSED,
                            });
                        }
                        Err(violations) => {
                            out.failed.push((Some(record), violations));
                            out.entries.push(Entry {
                                line: this_line,
                                start: record_start,
                                end: end + 1,
                                failed: (out.failed.len() - 1) as u32,
                            });
                        }
                    }
                    continue;
                }
            };
            let failed = if passed {
                PASSED
            } else {
                (out.failed.len() - 1) as u32
            };
            out.entries.push(Entry {
                line: this_line,
                start: record_start,
                end: end + 1,
                failed,
            });
        }
        scratch.values = recycle(values);
    }
}

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
