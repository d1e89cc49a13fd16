//! Typed field values, borrowed from the record being checked so that the
//! hot path of a check allocates nothing per cell.

use std::fmt::Write as _;

use serde::Serialize;

/// The declared type of a schema field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// A 64-bit signed integer.
    Int,
    /// A 64-bit float (finite or not; use `min`/`max` to exclude infinities).
    Float,
    /// `true`/`false` (CSV also accepts `1`/`0`, `yes`/`no`, any case).
    Bool,
    /// UTF-8 text.
    String,
    /// A list of tokens: a JSON array of strings, or text split on a separator.
    Tokens,
}

impl FieldType {
    /// Parses the schema spelling of a type.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "int" | "integer" => FieldType::Int,
            "float" | "number" => FieldType::Float,
            "bool" | "boolean" => FieldType::Bool,
            "string" | "str" | "text" => FieldType::String,
            "tokens" | "token_list" => FieldType::Tokens,
            _ => return None,
        })
    }

    /// The schema spelling of the type.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Int => "int",
            FieldType::Float => "float",
            FieldType::Bool => "bool",
            FieldType::String => "string",
            FieldType::Tokens => "tokens",
        }
    }
}

/// A typed value of one field of one record, borrowing its text.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueRef<'a> {
    /// Absent, empty or a declared null marker.
    Null,
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// Text.
    Str(&'a str),
    /// A token list.
    Tokens(Vec<&'a str>),
}

impl ValueRef<'_> {
    /// The value as f64 when it is numeric (used by rules and profiles).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ValueRef::Int(value) => Some(*value as f64),
            ValueRef::Float(value) => Some(*value),
            _ => None,
        }
    }

    /// Appends the value as JSON to `out` (the queue stores records as JSON
    /// objects; writing by hand avoids building a `serde_json::Value`).
    pub fn write_json(&self, out: &mut String) {
        match self {
            ValueRef::Null => out.push_str("null"),
            // itoa and ryu (what serde_json writes with) are several times
            // faster than `fmt`, and this runs for every number queued.
            ValueRef::Int(value) => out.push_str(itoa::Buffer::new().format(*value)),
            ValueRef::Float(value) => {
                if value.is_finite() {
                    out.push_str(ryu::Buffer::new().format_finite(*value));
                } else {
                    // JSON has no infinities or NaN; keep them as strings
                    // rather than lose them.
                    write_json_string(out, &value.to_string());
                }
            }
            ValueRef::Bool(value) => out.push_str(if *value { "true" } else { "false" }),
            ValueRef::Str(text) => write_json_string(out, text),
            ValueRef::Tokens(tokens) => {
                out.push('[');
                for (index, token) in tokens.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    write_json_string(out, token);
                }
                out.push(']');
            }
        }
    }

    /// A short human-readable rendering for reports and quarantine entries.
    pub fn display(&self) -> String {
        match self {
            ValueRef::Null => "null".to_owned(),
            ValueRef::Int(value) => value.to_string(),
            ValueRef::Float(value) => value.to_string(),
            ValueRef::Bool(value) => value.to_string(),
            ValueRef::Str(text) => (*text).to_owned(),
            ValueRef::Tokens(tokens) => tokens.join(" "),
        }
    }
}

/// Writes `text` as a JSON string literal.
pub fn write_json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut start = 0;
    for (index, byte) in text.bytes().enumerate() {
        let escape: Option<&str> = match byte {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&text[start..index]);
        match escape {
            Some(escape) => out.push_str(escape),
            None => {
                let _ = write!(out, "\\u{byte:04x}");
            }
        }
        start = index + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

/// Appends an accepted record as a JSON object to `out`.
pub(crate) fn append_record_json(out: &mut String, keys: &[String], values: &[ValueRef<'_>]) {
    append_json_object(out, keys, |index, out| values[index].write_json(out));
}

/// Appends a JSON object of `keys` (each `"name":`, see [`json_keys`]) to
/// `out`, `value(i, out)` writing the value of key `i`.
pub(crate) fn append_json_object(
    out: &mut String,
    keys: &[String],
    mut value: impl FnMut(usize, &mut String),
) {
    out.push('{');
    for (index, key) in keys.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(key);
        value(index, out);
    }
    out.push('}');
}

/// Appends the text of a valid `field_type` cell to `out` as it stands when
/// it is already the JSON spelling of its value, and says whether it did:
/// an integer as `-?(0|[1-9][0-9]*)` (not `-0`), a float as
/// `-?(0|[1-9][0-9]*)\.[0-9]+`, so it reads back as a float. Formatting
/// the parsed number again was 6% of a check's time into a store.
pub(crate) fn write_number_text(out: &mut String, field_type: FieldType, text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text).as_bytes();
    let whole = digits
        .iter()
        .position(|&byte| byte == b'.')
        .unwrap_or(digits.len());
    let whole_ok = match &digits[..whole] {
        [] => false,
        [b'0'] => true,
        [b'0', ..] => false,
        whole => whole.iter().all(u8::is_ascii_digit),
    };
    let fraction = digits.get(whole + 1..).unwrap_or_default();
    let copy = whole_ok
        && match field_type {
            FieldType::Int => whole == digits.len() && !(digits == b"0" && text.len() > 1),
            FieldType::Float => !fraction.is_empty() && fraction.iter().all(u8::is_ascii_digit),
            _ => false,
        };
    if copy {
        out.push_str(text);
    }
    copy
}

/// Each field name as a JSON key with its colon (`"name":`), in order,
/// ready for [`append_record_json`].
pub(crate) fn json_keys<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    names
        .map(|name| {
            let mut key = String::new();
            write_json_string(&mut key, name);
            key.push(':');
            key
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_writing_round_trips_through_serde_json() {
        let values = [
            ValueRef::Null,
            ValueRef::Int(-42),
            ValueRef::Float(0.1),
            ValueRef::Float(f64::INFINITY),
            ValueRef::Bool(true),
            ValueRef::Str("quote \" back \\ nl \n tab \t bell \u{7} é"),
            ValueRef::Tokens(vec!["a", "b\"c"]),
        ];
        for value in values {
            let mut out = String::new();
            value.write_json(&mut out);
            let parsed: serde_json::Value = serde_json::from_str(&out).expect(&out);
            match value {
                ValueRef::Str(text) => assert_eq!(parsed, serde_json::json!(text)),
                ValueRef::Float(number) if number.is_finite() => {
                    assert_eq!(parsed.as_f64(), Some(number))
                }
                ValueRef::Int(number) => assert_eq!(parsed.as_i64(), Some(number)),
                _ => {}
            }
        }
    }

    #[test]
    fn number_text_is_copied_only_when_it_is_already_json() {
        let copied = |field_type: FieldType, text: &str| {
            let mut out = String::new();
            let copy = write_number_text(&mut out, field_type, text);
            assert_eq!(copy, !out.is_empty(), "{text}");
            copy.then_some(out)
        };
        for text in ["12", "-3", "0", "1234567890123456789"] {
            assert_eq!(copied(FieldType::Int, text).as_deref(), Some(text));
        }
        for text in ["32.80", "-0.5", "0.0", "-0.0", "966.000001"] {
            assert_eq!(copied(FieldType::Float, text).as_deref(), Some(text));
        }
        // Not JSON's spelling (or not a float's): formatted again.
        for text in ["+12", "007", "-0", "", "-", "1.5", "1e5"] {
            assert_eq!(copied(FieldType::Int, text), None, "{text}");
        }
        for text in [
            ".5", "5.", "05.0", "+1.5", "966", "1e5", "1.2.3", "-.5", "", ".",
        ] {
            assert_eq!(copied(FieldType::Float, text), None, "{text}");
        }
        assert_eq!(copied(FieldType::String, "12"), None);
    }

    proptest::proptest! {
        #[test]
        fn copied_number_text_reads_back_as_the_checked_value(
            whole in "-?(0|[1-9][0-9]{0,12})",
            fraction in "[0-9]{1,12}",
        ) {
            let text = format!("{whole}.{fraction}");
            let mut out = String::new();
            proptest::prop_assert!(write_number_text(&mut out, FieldType::Float, &text));
            let parsed: serde_json::Value = serde_json::from_str(&out).expect(&out);
            proptest::prop_assert!(parsed.is_f64(), "{}", out);
            // serde_json's default parser may miss the last bit; Rust's is
            // exact, so it judges the stored text.
            proptest::prop_assert_eq!(out.parse::<f64>().ok(), text.parse::<f64>().ok());
            out.clear();
            proptest::prop_assert!(write_number_text(&mut out, FieldType::Int, &whole) == (whole != "-0"));
        }

        #[test]
        fn numbers_are_written_as_json_that_reads_back_exactly(
            bits in proptest::prelude::any::<u64>(),
            integer in proptest::prelude::any::<i64>(),
        ) {
            let number = f64::from_bits(bits);
            let mut out = String::new();
            ValueRef::Float(number).write_json(&mut out);
            let parsed: serde_json::Value = serde_json::from_str(&out).expect(&out);
            if number.is_finite() {
                // serde_json's default parser may miss the last bit; Rust's
                // is exact, so it judges the text.
                proptest::prop_assert!(parsed.is_number(), "{}", out);
                proptest::prop_assert_eq!(out.parse::<f64>().ok(), Some(number), "{}", out);
            } else {
                let text = number.to_string();
                proptest::prop_assert_eq!(parsed.as_str(), Some(text.as_str()));
            }
            out.clear();
            ValueRef::Int(integer).write_json(&mut out);
            proptest::prop_assert_eq!(out.parse::<i64>().ok(), Some(integer));
        }
    }
}
