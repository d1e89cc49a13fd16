//! The schema: a TOML file declaring fields, their types and constraints,
//! record-level rules and how to read the sources.
//!
//! ```toml
//! name = "orders"
//! [source]
//! delimiter = ";"          # CSV only; default ","
//! header = true            # CSV only; default true
//! null_values = ["", "NA"] # CSV text that means null; default [""]
//!
//! [[field]]
//! name = "id"
//! type = "int"             # int | float | bool | string | tokens
//! required = true
//! unique = true
//! min = 1
//!
//! [[field]]
//! name = "email"
//! type = "string"
//! regex = "[^@]+@[^@]+"    # must match the whole value
//! max_length = 200
//!
//! [[rule]]
//! name = "dates in order"
//! check = "start <= end"
//! ```
//!
//! The file is parsed with spans so that every error names its line and
//! column.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use crate::error::{DataError, DataResult, TextPlace};
use crate::rule::{self, Expr};
use crate::unique::FastSet;
use crate::value::FieldType;

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma (or other delimiter) separated values.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// Apache Parquet.
    Parquet,
}

impl Format {
    /// Parses a format name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "csv" => Format::Csv,
            "jsonl" | "ndjson" | "json" => Format::Jsonl,
            "parquet" | "pq" => Format::Parquet,
            _ => return None,
        })
    }

    /// Guesses the format from a file extension.
    pub fn from_path(path: &Path) -> Option<Self> {
        path.extension()
            .and_then(|extension| Self::parse(&extension.to_string_lossy()))
    }

    /// The format's name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
        }
    }
}

/// How sources are read.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceOptions {
    /// Forced format; `None` means "by file extension".
    pub format: Option<Format>,
    /// CSV field delimiter.
    pub delimiter: u8,
    /// CSV quote character.
    pub quote: u8,
    /// Whether CSV files start with a header row naming the columns.
    pub header: bool,
    /// CSV cell texts that mean null.
    pub null_values: Vec<String>,
    /// Longest record accepted, in bytes; longer ones are quarantined. This
    /// bounds memory when a quote is never closed.
    pub max_record_bytes: usize,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            format: None,
            delimiter: b',',
            quote: b'"',
            header: true,
            null_values: vec![String::new()],
            max_record_bytes: 1 << 20,
        }
    }
}

/// A numeric bound, kept exact for integers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// An integer bound.
    Int(i64),
    /// A float bound.
    Float(f64),
}

impl Bound {
    /// The bound as f64.
    pub fn as_f64(self) -> f64 {
        match self {
            Bound::Int(value) => value as f64,
            Bound::Float(value) => value,
        }
    }
}

/// The allowed values of a `one_of` constraint.
#[derive(Debug, Clone)]
pub enum OneOf {
    /// Allowed integers.
    Ints(FastSet<i64>),
    /// Allowed strings (for string fields, and each token of token lists).
    Strings(FastSet<String>),
}

/// One declared field and its constraints.
#[derive(Debug, Clone)]
pub struct Field {
    /// Column or key name.
    pub name: String,
    /// Declared type.
    pub field_type: FieldType,
    /// Null is a violation.
    pub required: bool,
    /// Each value may occur in at most one accepted record.
    pub unique: bool,
    /// Inclusive lower bound (numbers).
    pub min: Option<Bound>,
    /// Inclusive upper bound (numbers).
    pub max: Option<Bound>,
    /// Pattern the whole value (each token, for token lists) must match.
    pub regex: Option<Regex>,
    /// The pattern as written, for messages.
    pub regex_text: Option<String>,
    /// Allowed values.
    pub one_of: Option<OneOf>,
    /// Least length: characters of a string, tokens of a token list.
    pub min_length: Option<usize>,
    /// Greatest length.
    pub max_length: Option<usize>,
    /// Token separator for text cells; `None` splits on whitespace.
    pub separator: Option<String>,
}

/// A compiled record-level rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Name shown in quarantine entries (the expression when unnamed).
    pub name: String,
    /// The expression as written.
    pub text: String,
    /// Compiled form.
    pub expr: Expr,
}

/// A loaded, validated schema.
#[derive(Debug, Clone)]
pub struct Schema {
    /// Schema name (the file stem when not given).
    pub name: String,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The TOML text, stored with each run for reproducibility.
    pub text: String,
    /// Source reading options.
    pub source: SourceOptions,
    /// Fields in declaration order.
    pub fields: Vec<Field>,
    /// Record-level rules.
    pub rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchema {
    name: Option<String>,
    #[serde(default)]
    source: Option<Spanned<RawSource>>,
    #[serde(default, rename = "field")]
    fields: Vec<Spanned<RawField>>,
    #[serde(default, rename = "rule")]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    format: Option<Spanned<String>>,
    delimiter: Option<Spanned<String>>,
    quote: Option<Spanned<String>>,
    header: Option<bool>,
    null_values: Option<Vec<String>>,
    max_record_bytes: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    unique: bool,
    min: Option<Spanned<toml::Value>>,
    max: Option<Spanned<toml::Value>>,
    regex: Option<Spanned<String>>,
    one_of: Option<Spanned<Vec<toml::Value>>>,
    min_length: Option<Spanned<i64>>,
    max_length: Option<Spanned<i64>>,
    separator: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    check: Spanned<String>,
}

impl Schema {
    /// Reads and validates a schema file.
    pub fn load(path: &Path) -> DataResult<Self> {
        let text = std::fs::read_to_string(path).map_err(|error| DataError::io(path, error))?;
        Self::parse(path, &text)
    }

    /// Validates schema text; `path` is used in messages.
    pub fn parse(path: &Path, text: &str) -> DataResult<Self> {
        let error = |start: usize, end: usize, message: String| DataError::Schema {
            path: path.to_path_buf(),
            text: text.to_owned(),
            place: TextPlace::from_span(text, start, end),
            message,
        };
        let raw: RawSchema = toml::from_str(text).map_err(|fault| {
            let span = fault.span().unwrap_or(0..0);
            error(span.start, span.end, fault.message().trim().to_owned())
        })?;

        let mut source = SourceOptions::default();
        if let Some(raw_source) = raw.source {
            let raw_source = raw_source.into_inner();
            if let Some(format) = raw_source.format {
                source.format = Some(Format::parse(format.get_ref()).ok_or_else(|| {
                    error(
                        format.span().start,
                        format.span().end,
                        format!(
                            "unknown format `{}` (expected csv, jsonl or parquet)",
                            format.get_ref()
                        ),
                    )
                })?);
            }
            for (option, target) in [
                (raw_source.delimiter, &mut source.delimiter),
                (raw_source.quote, &mut source.quote),
            ] {
                if let Some(option) = option {
                    let value = option.get_ref();
                    let byte = match value.as_str() {
                        "\\t" | "tab" => b'\t',
                        single if single.len() == 1 && single != "\n" && single != "\r" => {
                            single.as_bytes()[0]
                        }
                        _ => {
                            return Err(error(
                                option.span().start,
                                option.span().end,
                                format!("`{value}` must be one ASCII character (or \"tab\")"),
                            ))
                        }
                    };
                    *target = byte;
                }
            }
            if source.delimiter == source.quote {
                return Err(error(
                    0,
                    0,
                    "the CSV delimiter and quote must differ".to_owned(),
                ));
            }
            if let Some(header) = raw_source.header {
                source.header = header;
            }
            if let Some(null_values) = raw_source.null_values {
                source.null_values = null_values;
            }
            if let Some(limit) = raw_source.max_record_bytes {
                if *limit.get_ref() < 16 {
                    return Err(error(
                        limit.span().start,
                        limit.span().end,
                        "max_record_bytes must be at least 16".to_owned(),
                    ));
                }
                source.max_record_bytes = usize::try_from(*limit.get_ref()).unwrap_or(usize::MAX);
            }
        }

        if raw.fields.is_empty() {
            return Err(error(0, 0, "the schema declares no [[field]]".to_owned()));
        }
        let mut fields = Vec::with_capacity(raw.fields.len());
        let mut names = HashSet::new();
        for spanned in raw.fields {
            let field_span = spanned.span();
            let raw_field = spanned.into_inner();
            let name = raw_field.name.get_ref().clone();
            let at = |spanned_span: std::ops::Range<usize>, message: String| {
                error(spanned_span.start, spanned_span.end, message)
            };
            if name.is_empty() {
                return Err(at(
                    raw_field.name.span(),
                    "a field name cannot be empty".to_owned(),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(at(
                    raw_field.name.span(),
                    format!("field `{name}` is declared twice"),
                ));
            }
            let field_type = FieldType::parse(raw_field.kind.get_ref()).ok_or_else(|| {
                at(
                    raw_field.kind.span(),
                    format!(
                        "unknown type `{}` (expected int, float, bool, string or tokens)",
                        raw_field.kind.get_ref()
                    ),
                )
            })?;
            let numeric = matches!(field_type, FieldType::Int | FieldType::Float);
            let bound =
                |value: &Option<Spanned<toml::Value>>, which: &str| -> DataResult<Option<Bound>> {
                    let Some(value) = value else { return Ok(None) };
                    if !numeric {
                        return Err(at(
                            value.span(),
                            format!(
                                "`{which}` applies to int and float fields; `{name}` is {}",
                                field_type.name()
                            ),
                        ));
                    }
                    match value.get_ref() {
                        toml::Value::Integer(number) => Ok(Some(Bound::Int(*number))),
                        toml::Value::Float(number) if !number.is_nan() => {
                            Ok(Some(Bound::Float(*number)))
                        }
                        _ => Err(at(value.span(), format!("`{which}` must be a number"))),
                    }
                };
            let min = bound(&raw_field.min, "min")?;
            let max = bound(&raw_field.max, "max")?;
            if let (Some(low), Some(high)) = (min, max) {
                if low.as_f64() > high.as_f64() {
                    return Err(at(
                        raw_field
                            .max
                            .as_ref()
                            .map_or(field_span.clone(), Spanned::span),
                        "max is below min".to_owned(),
                    ));
                }
            }
            let textual = matches!(field_type, FieldType::String | FieldType::Tokens);
            let regex = match &raw_field.regex {
                None => None,
                Some(pattern) if !textual => {
                    return Err(at(
                        pattern.span(),
                        format!(
                            "`regex` applies to string and tokens fields; `{name}` is {}",
                            field_type.name()
                        ),
                    ))
                }
                Some(pattern) => Some(
                    Regex::new(&format!("^(?:{})$", pattern.get_ref())).map_err(|fault| {
                        at(
                            pattern.span(),
                            format!(
                                "invalid regex: {}",
                                fault.to_string().lines().last().unwrap_or("")
                            ),
                        )
                    })?,
                ),
            };
            let one_of = match &raw_field.one_of {
                None => None,
                Some(values) => {
                    let span = values.span();
                    match field_type {
                        FieldType::Int => {
                            let mut allowed = FastSet::default();
                            for value in values.get_ref() {
                                let toml::Value::Integer(number) = value else {
                                    return Err(at(
                                        span,
                                        format!("one_of of int field `{name}` must list integers"),
                                    ));
                                };
                                allowed.insert(*number);
                            }
                            Some(OneOf::Ints(allowed))
                        }
                        FieldType::String | FieldType::Tokens => {
                            let mut allowed = FastSet::default();
                            for value in values.get_ref() {
                                let toml::Value::String(text) = value else {
                                    return Err(at(
                                        span,
                                        format!("one_of of `{name}` must list strings"),
                                    ));
                                };
                                allowed.insert(text.clone());
                            }
                            Some(OneOf::Strings(allowed))
                        }
                        _ => {
                            return Err(at(
                                span,
                                format!(
                                "one_of applies to int, string and tokens fields; `{name}` is {}",
                                field_type.name()
                            ),
                            ))
                        }
                    }
                }
            };
            let length = |value: &Option<Spanned<i64>>, which: &str| -> DataResult<Option<usize>> {
                let Some(value) = value else { return Ok(None) };
                if !textual {
                    return Err(at(
                        value.span(),
                        format!(
                            "`{which}` applies to string and tokens fields; `{name}` is {}",
                            field_type.name()
                        ),
                    ));
                }
                usize::try_from(*value.get_ref())
                    .map(Some)
                    .map_err(|_| at(value.span(), format!("`{which}` must be zero or more")))
            };
            let min_length = length(&raw_field.min_length, "min_length")?;
            let max_length = length(&raw_field.max_length, "max_length")?;
            if let (Some(low), Some(high)) = (min_length, max_length) {
                if low > high {
                    return Err(at(
                        raw_field
                            .max_length
                            .as_ref()
                            .map_or(field_span.clone(), Spanned::span),
                        "max_length is below min_length".to_owned(),
                    ));
                }
            }
            if raw_field.separator.is_some() && field_type != FieldType::Tokens {
                return Err(at(
                    field_span,
                    format!(
                        "`separator` applies to tokens fields; `{name}` is {}",
                        field_type.name()
                    ),
                ));
            }
            if raw_field.separator.as_deref() == Some("") {
                return Err(at(field_span, "`separator` cannot be empty".to_owned()));
            }
            fields.push(Field {
                name,
                field_type,
                required: raw_field.required,
                unique: raw_field.unique,
                min,
                max,
                regex_text: raw_field.regex.map(Spanned::into_inner),
                regex,
                one_of,
                min_length,
                max_length,
                separator: raw_field.separator,
            });
        }

        let declared: Vec<(String, FieldType)> = fields
            .iter()
            .map(|field| (field.name.clone(), field.field_type))
            .collect();
        let mut rules = Vec::with_capacity(raw.rules.len());
        for spanned in raw.rules {
            let raw_rule = spanned.into_inner();
            let check = raw_rule.check;
            let span = check.span();
            // The span covers the quoted literal; the expression starts after
            // the opening quote (exact for strings without escapes).
            let body_start = span.start
                + if text[span.clone()].starts_with("\"\"\"")
                    || text[span.clone()].starts_with("'''")
                {
                    3
                } else {
                    1
                };
            let expr = rule::compile(check.get_ref(), &declared).map_err(|fault| {
                let start = (body_start + fault.offset).min(span.end);
                error(
                    start,
                    (start + fault.length).min(span.end.max(start)),
                    format!("rule: {}", fault.message),
                )
            })?;
            let text = check.into_inner();
            rules.push(Rule {
                name: raw_rule.name.unwrap_or_else(|| text.clone()),
                text,
                expr,
            });
        }

        Ok(Self {
            name: raw.name.unwrap_or_else(|| {
                path.file_stem().map_or_else(
                    || "schema".to_owned(),
                    |stem| stem.to_string_lossy().into_owned(),
                )
            }),
            path: path.to_path_buf(),
            text: text.to_owned(),
            source,
            fields,
            rules,
        })
    }

    /// Index of the field called `name`.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|field| field.name == name)
    }

    /// The format of `path`: forced by the schema or guessed from the
    /// extension.
    pub fn format_of(&self, path: &Path) -> DataResult<Format> {
        self.source.format.or_else(|| Format::from_path(path)).ok_or_else(|| DataError::Source {
            path: path.to_path_buf(),
            line: 0,
            message: "cannot tell the format from the extension; use .csv, .jsonl or .parquet, or set [source] format in the schema".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> DataResult<Schema> {
        Schema::parse(Path::new("test.toml"), text)
    }

    fn fault(text: &str) -> (usize, usize, String) {
        match parse(text) {
            Err(DataError::Schema { place, message, .. }) => (place.line, place.column, message),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("schema unexpectedly valid:\n{text}"),
        }
    }

    #[test]
    fn parses_a_full_schema() {
        let schema = parse(
            r#"
name = "orders"
[source]
delimiter = ";"
null_values = ["", "NA"]

[[field]]
name = "id"
type = "int"
required = true
unique = true
min = 1

[[field]]
name = "code"
type = "string"
regex = "[A-Z]{3}"
one_of = ["ABC", "XYZ"]

[[field]]
name = "tags"
type = "tokens"
separator = "|"
max_length = 3

[[rule]]
check = "id < 100"
"#,
        )
        .unwrap();
        assert_eq!(schema.name, "orders");
        assert_eq!(schema.source.delimiter, b';');
        assert_eq!(schema.fields.len(), 3);
        assert!(schema.fields[1].regex.as_ref().unwrap().is_match("ABC"));
        assert!(
            !schema.fields[1].regex.as_ref().unwrap().is_match("ABCD"),
            "regex is anchored"
        );
        assert_eq!(schema.rules[0].name, "id < 100");
    }

    #[test]
    fn errors_name_line_and_column() {
        let (line, column, message) = fault("[[field]]\nname = \"a\"\ntype = \"integr\"\n");
        assert_eq!((line, column), (3, 8));
        assert!(message.contains("unknown type"), "{message}");

        let (line, _, message) = fault("[[field]]\nname = \"a\"\ntype = \"int\"\nbogus = 1\n");
        assert_eq!(line, 4);
        assert!(message.contains("bogus"), "{message}");

        let (line, column, message) =
            fault("[[field]]\nname = \"a\"\ntype = \"int\"\n[[rule]]\ncheck = \"a < b\"\n");
        assert_eq!((line, column), (5, 14));
        assert!(message.contains("unknown field `b`"), "{message}");

        let (line, _, message) =
            fault("[[field]]\nname = \"a\"\ntype = \"string\"\nregex = \"(\"\n");
        assert_eq!(line, 4);
        assert!(message.contains("regex"), "{message}");

        let (line, _, _) = fault("[[field]]\nname = \"a\"\ntype = \"string\"\nmin = 1\n");
        assert_eq!(line, 4);
        let (line, _, _) = fault(
            "[[field]]\nname = \"a\"\ntype = \"int\"\n[[field]]\nname = \"a\"\ntype = \"int\"\n",
        );
        assert_eq!(line, 5);
        let (line, _, _) = fault("[[field]]\nname = \"a\"\ntype = \"int\"\nmin = 5\nmax = 1\n");
        assert_eq!(line, 5);
        let (line, _, _) = fault("[[field]\nname = 1");
        assert_eq!(line, 1);
        let (_, _, message) = fault("name = \"x\"\n");
        assert!(message.contains("no [[field]]"));
    }
}
