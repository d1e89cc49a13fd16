//! The quality check `I(d) ∈ {0,1}` of §6.1, applied to one record at a
//! time: typed conversion, per-field constraints, record-level rules, and
//! uniqueness. A record passes only when every criterion holds; otherwise
//! the check lists every violation found, so the quarantine entry says
//! exactly why.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, DataResult};
use crate::schema::{Bound, Field, OneOf, Schema};
use crate::source::{Body, Record};
use crate::unique::{stable_hash, UniqueSet};
use crate::value::{FieldType, ValueRef};

/// One reason a record failed the check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The field at fault; `None` for record-level faults (malformed input,
    /// cross-field rules).
    pub field: Option<String>,
    /// The rule broken: `required`, `type`, `min`, `max`, `one_of`,
    /// `min_length`, `max_length`, `regex`, `unique`, `rule:<name>`, or a
    /// malformed-input kind such as `bad_quoting`.
    pub rule: String,
    /// The offending value as text, when there is one.
    pub value: Option<String>,
    /// A sentence for people.
    pub message: String,
}

/// Where each schema field is found in a source's records.
#[derive(Debug, Clone)]
pub enum Binding {
    /// CSV: the column index of each field (`None`: absent, read as null).
    Columns(Vec<Option<usize>>),
    /// JSON objects: fields are looked up by name.
    Keys,
}

/// A borrowed cell before typing.
enum Cell<'a> {
    Missing,
    Text(&'a str),
    Json(&'a serde_json::Value),
}

/// The checker: a schema plus the state that spans records (unique sets).
pub struct Checker<'s> {
    schema: &'s Schema,
    unique: Vec<Option<UniqueSet>>,
    spare: Vec<ValueRef<'static>>,
}

/// Empties a vector of values and hands its allocation to another lifetime
/// (an in-place `collect` of an empty iterator reuses the buffer), so the
/// hot loop allocates no vector per record.
fn recycle<'b>(mut values: Vec<ValueRef<'_>>) -> Vec<ValueRef<'b>> {
    values.clear();
    values.into_iter().map(|_| ValueRef::Null).collect()
}

impl<'s> Checker<'s> {
    /// A checker with empty unique sets.
    pub fn new(schema: &'s Schema) -> Self {
        Self {
            schema,
            unique: schema
                .fields
                .iter()
                .map(|field| field.unique.then(UniqueSet::default))
                .collect(),
            spare: Vec::new(),
        }
    }

    /// The schema.
    pub fn schema(&self) -> &'s Schema {
        self.schema
    }

    /// Returns the values of an accepted record once used, so their buffer
    /// serves the next record.
    pub fn give_back(&mut self, values: Vec<ValueRef<'_>>) {
        self.spare = recycle(values);
    }

    /// Marks a value as already taken (values in the queue from earlier
    /// runs), so `unique` holds across runs.
    pub fn seed_unique(&mut self, field: usize, value: &serde_json::Value) {
        let Some(Some(set)) = self.unique.get_mut(field) else {
            return;
        };
        let field = &self.schema.fields[field];
        if let Ok(typed) = type_json(field, value) {
            match typed {
                ValueRef::Int(number) => {
                    set.insert_integer(number);
                }
                ValueRef::Null => {}
                other => {
                    set.insert_hash(hash_value(&other));
                }
            }
        }
    }

    /// Maps a source's columns onto the schema. For CSV with a header every
    /// required field must be present; without a header, fields are taken in
    /// schema order.
    pub fn bind(&self, columns: &[String], path: &Path, keyed: bool) -> DataResult<Binding> {
        if keyed {
            return Ok(Binding::Keys);
        }
        if columns.is_empty() {
            return Ok(Binding::Columns(
                (0..self.schema.fields.len()).map(Some).collect(),
            ));
        }
        let mut binding = Vec::with_capacity(self.schema.fields.len());
        for field in &self.schema.fields {
            let column = columns.iter().position(|name| *name == field.name);
            if column.is_none() && field.required {
                return Err(DataError::Source {
                    path: path.to_path_buf(),
                    line: 1,
                    message: format!(
                        "the header has no column `{}`, which the schema requires (columns: {})",
                        field.name,
                        columns.join(", ")
                    ),
                });
            }
            binding.push(column);
        }
        Ok(Binding::Columns(binding))
    }

    /// Applies `I(d)` to `record`: `Ok(values)` when it passes (and records
    /// its unique values as taken), `Err(violations)` when it does not.
    pub fn check<'r>(
        &mut self,
        record: &'r Record,
        binding: &Binding,
    ) -> Result<Vec<ValueRef<'r>>, Vec<Violation>> {
        let values = recycle(std::mem::take(&mut self.spare));
        let values = check_record(self.schema, record, binding, values)?;
        self.claim_unique(&values)?;
        Ok(values)
    }

    /// The indices of the schema's `unique` fields.
    pub(crate) fn unique_fields(&self) -> Vec<usize> {
        self.unique
            .iter()
            .enumerate()
            .filter_map(|(index, set)| set.as_ref().map(|_| index))
            .collect()
    }

    /// The uniqueness part of `I(d)`, for a record that passed everything
    /// else: when none of its unique values was taken by an earlier accepted
    /// record, takes them all; otherwise takes none and says which were.
    pub(crate) fn claim_unique(&mut self, values: &[ValueRef<'_>]) -> Result<(), Vec<Violation>> {
        let schema = self.schema;
        let mut violations = Vec::new();
        // Uniqueness last, and only for otherwise valid records: a value is
        // taken by the first *accepted* record that holds it.
        for (index, value) in values.iter().enumerate() {
            let Some(set) = &self.unique[index] else {
                continue;
            };
            if UniqueKey::of(value).is_taken(set) {
                violations.push(Violation {
                    field: Some(schema.fields[index].name.clone()),
                    rule: "unique".to_owned(),
                    value: Some(value.display()),
                    message: format!(
                        "`{}` = {} was already accepted",
                        schema.fields[index].name,
                        preview(&value.display())
                    ),
                });
            }
        }
        if !violations.is_empty() {
            return Err(violations);
        }
        for (index, value) in values.iter().enumerate() {
            if let Some(set) = &mut self.unique[index] {
                UniqueKey::of(value).take(set);
            }
        }
        Ok(())
    }

    /// [`Checker::claim_unique`] by keys (one per unique field, in schema
    /// order): true when all were free and are now taken, false (nothing
    /// taken) when one was already taken.
    pub(crate) fn claim_keys(&mut self, fields: &[usize], keys: &[UniqueKey]) -> bool {
        if let ([field], [key]) = (fields, keys) {
            // One unique field: inserting tells whether it was free.
            return match &mut self.unique[*field] {
                Some(set) => key.take(set),
                None => true,
            };
        }
        let free = fields
            .iter()
            .zip(keys)
            .all(|(&field, key)| match &self.unique[field] {
                Some(set) => !key.is_taken(set),
                None => true,
            });
        if free {
            for (&field, key) in fields.iter().zip(keys) {
                if let Some(set) = &mut self.unique[field] {
                    key.take(set);
                }
            }
        }
        free
    }
}

/// A value of a `unique` field as its set stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UniqueKey {
    /// Nulls are never duplicates.
    Null,
    /// Integers, kept exactly.
    Int(i64),
    /// Other values, by their stable hash.
    Hash(u64),
}

impl UniqueKey {
    #[inline]
    pub(crate) fn of(value: &ValueRef<'_>) -> Self {
        match value {
            ValueRef::Null => UniqueKey::Null,
            ValueRef::Int(number) => UniqueKey::Int(*number),
            other => UniqueKey::Hash(hash_value(other)),
        }
    }

    #[inline]
    fn is_taken(self, set: &UniqueSet) -> bool {
        match self {
            UniqueKey::Null => false,
            UniqueKey::Int(number) => set.contains_integer(number),
            UniqueKey::Hash(hash) => set.contains_hash(hash),
        }
    }

    /// Takes the value; false when it was already taken.
    #[inline]
    fn take(self, set: &mut UniqueSet) -> bool {
        match self {
            UniqueKey::Null => true,
            UniqueKey::Int(number) => set.insert_integer(number),
            UniqueKey::Hash(hash) => set.insert_hash(hash),
        }
    }
}

/// The violation of a record that could not be parsed.
pub(crate) fn malformed_violation(record: &Record, fault: &crate::source::Malformed) -> Violation {
    Violation {
        field: None,
        rule: fault.kind.rule().to_owned(),
        value: Some(preview(&String::from_utf8_lossy(&record.raw))),
        message: fault.message.clone(),
    }
}

/// `I(d)` without uniqueness (which needs the records before this one):
/// typing, field constraints and record-level rules. `values` is an empty
/// buffer to fill.
pub(crate) fn check_record<'r>(
    schema: &Schema,
    record: &'r Record,
    binding: &Binding,
    values: Vec<ValueRef<'r>>,
) -> Result<Vec<ValueRef<'r>>, Vec<Violation>> {
    if let Body::Malformed(fault) = &record.body {
        return Err(vec![malformed_violation(record, fault)]);
    }
    check_typed(schema, typed_cells(schema, record, binding), values)
}

/// Field constraints and record-level rules over a record's typed cells.
pub(crate) fn check_typed<'r>(
    schema: &Schema,
    typed: impl Iterator<Item = Result<ValueRef<'r>, Box<Violation>>>,
    mut values: Vec<ValueRef<'r>>,
) -> Result<Vec<ValueRef<'r>>, Vec<Violation>> {
    let mut violations = Vec::new();
    for (field, typed) in schema.fields.iter().zip(typed) {
        match typed {
            Ok(value) => {
                check_field(field, &value, &mut violations);
                values.push(value);
            }
            Err(violation) => {
                violations.push(*violation);
                values.push(ValueRef::Null);
            }
        }
    }
    if !violations.is_empty() {
        return Err(violations);
    }
    for rule in &schema.rules {
        if rule.expr.holds(&values) == Some(false) {
            let involved: Vec<String> = schema
                .fields
                .iter()
                .zip(&values)
                .filter(|(field, _)| contains_word(&rule.text, &field.name))
                .map(|(field, value)| format!("{}={}", field.name, value.display()))
                .collect();
            violations.push(Violation {
                field: None,
                rule: format!("rule:{}", rule.name),
                value: Some(involved.join(", ")),
                message: format!("rule `{}` does not hold", rule.text),
            });
        }
    }
    if !violations.is_empty() {
        return Err(violations);
    }
    Ok(values)
}

/// Types one CSV cell (`None`: the column is absent): null markers are
/// null, anything else is converted to the field's type.
pub(crate) fn type_cell<'r>(
    schema: &Schema,
    field: &Field,
    cell: Option<&'r str>,
) -> Result<ValueRef<'r>, Box<Violation>> {
    match cell {
        None => Ok(ValueRef::Null),
        Some(text) => {
            if schema.source.null_values.iter().any(|null| null == text) {
                Ok(ValueRef::Null)
            } else {
                type_text(field, text)
            }
        }
    }
}

/// Converts each schema field of a parsed (not malformed) record to its
/// declared type: the typed value, or the `type` violation. Shared by the
/// check and the profile so both read cells the same way.
pub fn typed_cells<'r, 'a>(
    schema: &'a Schema,
    record: &'r Record,
    binding: &'a Binding,
) -> impl Iterator<Item = Result<ValueRef<'r>, Box<Violation>>> + use<'r, 'a> {
    schema.fields.iter().enumerate().map(move |(index, field)| {
        let cell = match (&record.body, binding) {
            (Body::Text { .. }, Binding::Columns(columns)) => {
                match columns.get(index).copied().flatten() {
                    Some(column) => record.text_field(column).map_or(Cell::Missing, Cell::Text),
                    None => Cell::Missing,
                }
            }
            (Body::Json(map), _) => map.get(&field.name).map_or(Cell::Missing, Cell::Json),
            _ => Cell::Missing,
        };
        match cell {
            Cell::Missing => Ok(ValueRef::Null),
            Cell::Text(text) => type_cell(schema, field, Some(text)),
            Cell::Json(value) => type_json(field, value),
        }
    })
}

fn contains_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(start, _)| {
        let before = text[..start].chars().next_back();
        let after = text[start + word.len()..].chars().next();
        let boundary =
            |character: Option<char>| character.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        boundary(before) && boundary(after)
    })
}

fn hash_value(value: &ValueRef<'_>) -> u64 {
    match value {
        ValueRef::Float(number) => {
            stable_hash(&(if *number == 0.0 { 0.0f64 } else { *number }).to_bits())
        }
        ValueRef::Bool(flag) => stable_hash(flag),
        ValueRef::Str(text) => stable_hash(text),
        ValueRef::Tokens(tokens) => stable_hash(tokens),
        ValueRef::Int(number) => stable_hash(number),
        ValueRef::Null => 0,
    }
}

/// Shortens long values for messages (the full record stays in `raw`).
pub fn preview(text: &str) -> String {
    const LIMIT: usize = 200;
    if text.len() <= LIMIT {
        return text.to_owned();
    }
    let mut end = LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn type_fault(field: &Field, shown: &str, what: &str) -> Box<Violation> {
    Box::new(Violation {
        field: Some(field.name.clone()),
        rule: "type".to_owned(),
        value: Some(preview(shown)),
        message: format!(
            "`{}` must be {what}, found `{}`",
            field.name,
            preview(shown)
        ),
    })
}

fn split_tokens<'a>(field: &Field, text: &'a str) -> Vec<&'a str> {
    match &field.separator {
        Some(separator) => text.split(separator.as_str()).collect(),
        None => text.split_whitespace().collect(),
    }
}

fn type_text<'a>(field: &Field, text: &'a str) -> Result<ValueRef<'a>, Box<Violation>> {
    match field.field_type {
        FieldType::Int => text
            .trim()
            .parse::<i64>()
            .map(ValueRef::Int)
            .map_err(|_| type_fault(field, text, "an integer")),
        FieldType::Float => match text.trim().parse::<f64>() {
            Ok(number) if !number.is_nan() => Ok(ValueRef::Float(number)),
            _ => Err(type_fault(field, text, "a number")),
        },
        FieldType::Bool => {
            let word = text.trim();
            let is = |options: &[&str]| {
                options
                    .iter()
                    .any(|option| word.eq_ignore_ascii_case(option))
            };
            if is(&["true", "t", "yes", "y", "1"]) {
                Ok(ValueRef::Bool(true))
            } else if is(&["false", "f", "no", "n", "0"]) {
                Ok(ValueRef::Bool(false))
            } else {
                Err(type_fault(field, text, "true or false"))
            }
        }
        FieldType::String => Ok(ValueRef::Str(text)),
        FieldType::Tokens => Ok(ValueRef::Tokens(split_tokens(field, text))),
    }
}

fn type_json<'a>(
    field: &Field,
    value: &'a serde_json::Value,
) -> Result<ValueRef<'a>, Box<Violation>> {
    use serde_json::Value;
    let shown = || value.to_string();
    match (field.field_type, value) {
        (_, Value::Null) => Ok(ValueRef::Null),
        (FieldType::Int, Value::Number(number)) => match number.as_i64() {
            Some(integer) => Ok(ValueRef::Int(integer)),
            None => match number.as_f64() {
                Some(float) if float.fract() == 0.0 && float.abs() < 9.2e18 => {
                    Ok(ValueRef::Int(float as i64))
                }
                _ => Err(type_fault(field, &shown(), "an integer")),
            },
        },
        (FieldType::Int, _) => Err(type_fault(field, &shown(), "an integer")),
        (FieldType::Float, Value::Number(number)) => number
            .as_f64()
            .map(ValueRef::Float)
            .ok_or_else(|| type_fault(field, &shown(), "a number")),
        // JSON cannot spell infinities; accept them as strings.
        (FieldType::Float, Value::String(text))
            if matches!(
                text.to_ascii_lowercase().as_str(),
                "inf" | "-inf" | "infinity" | "-infinity"
            ) =>
        {
            Ok(ValueRef::Float(text.parse::<f64>().unwrap_or(f64::NAN)))
        }
        (FieldType::Float, _) => Err(type_fault(field, &shown(), "a number")),
        (FieldType::Bool, Value::Bool(flag)) => Ok(ValueRef::Bool(*flag)),
        (FieldType::Bool, _) => Err(type_fault(field, &shown(), "true or false")),
        (FieldType::String, Value::String(text)) => Ok(ValueRef::Str(text)),
        (FieldType::String, _) => Err(type_fault(field, &shown(), "a string")),
        (FieldType::Tokens, Value::String(text)) => Ok(ValueRef::Tokens(split_tokens(field, text))),
        (FieldType::Tokens, Value::Array(items)) => {
            let mut tokens = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(text) => tokens.push(text.as_str()),
                    _ => return Err(type_fault(field, &shown(), "a list of strings")),
                }
            }
            Ok(ValueRef::Tokens(tokens))
        }
        (FieldType::Tokens, _) => Err(type_fault(field, &shown(), "a list of strings")),
    }
}

fn check_field(field: &Field, value: &ValueRef<'_>, violations: &mut Vec<Violation>) {
    let mut fail = |rule: &str, shown: String, message: String| {
        violations.push(Violation {
            field: Some(field.name.clone()),
            rule: rule.to_owned(),
            value: Some(preview(&shown)),
            message,
        })
    };
    let name = &field.name;
    if *value == ValueRef::Null {
        if field.required {
            fail(
                "required",
                "null".to_owned(),
                format!("`{name}` is required but missing or null"),
            );
        }
        return;
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
        if let Some(min) = field.min.filter(|&min| below(min)) {
            fail(
                "min",
                value.display(),
                format!(
                    "`{name}` = {} is below the minimum {}",
                    value.display(),
                    min.as_f64()
                ),
            );
        }
        if let Some(max) = field.max.filter(|&max| above(max)) {
            fail(
                "max",
                value.display(),
                format!(
                    "`{name}` = {} is above the maximum {}",
                    value.display(),
                    max.as_f64()
                ),
            );
        }
    }
    match (value, &field.one_of) {
        (ValueRef::Int(integer), Some(OneOf::Ints(allowed))) if !allowed.contains(integer) => {
            fail(
                "one_of",
                integer.to_string(),
                format!("`{name}` = {integer} is not an allowed value"),
            );
        }
        (ValueRef::Str(text), Some(OneOf::Strings(allowed))) if !allowed.contains(*text) => {
            fail(
                "one_of",
                (*text).to_owned(),
                format!("`{name}` = `{}` is not an allowed value", preview(text)),
            );
        }
        (ValueRef::Tokens(tokens), Some(OneOf::Strings(allowed))) => {
            if let Some(token) = tokens.iter().find(|token| !allowed.contains(**token)) {
                fail(
                    "one_of",
                    (*token).to_owned(),
                    format!(
                        "token `{}` of `{name}` is not an allowed value",
                        preview(token)
                    ),
                );
            }
        }
        _ => {}
    }
    let length = match value {
        ValueRef::Str(text) => Some(if text.is_ascii() {
            text.len()
        } else {
            text.chars().count()
        }),
        ValueRef::Tokens(tokens) => Some(tokens.len()),
        _ => None,
    };
    if let Some(length) = length {
        if let Some(min) = field.min_length.filter(|&min| length < min) {
            fail(
                "min_length",
                value.display(),
                format!("`{name}` has length {length}, below the minimum {min}"),
            );
        }
        if let Some(max) = field.max_length.filter(|&max| length > max) {
            fail(
                "max_length",
                value.display(),
                format!("`{name}` has length {length}, above the maximum {max}"),
            );
        }
    }
    if let Some(regex) = &field.regex {
        let pattern = field.regex_text.as_deref().unwrap_or("");
        match value {
            ValueRef::Str(text) if !regex.is_match(text) => {
                fail(
                    "regex",
                    (*text).to_owned(),
                    format!("`{name}` = `{}` does not match /{pattern}/", preview(text)),
                );
            }
            ValueRef::Tokens(tokens) => {
                if let Some(token) = tokens.iter().find(|token| !regex.is_match(token)) {
                    fail(
                        "regex",
                        (*token).to_owned(),
                        format!(
                            "token `{}` of `{name}` does not match /{pattern}/",
                            preview(token)
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::SourceOptions;
    use crate::source::{CsvSource, RecordSource};

    const SCHEMA: &str = r#"
[[field]]
name = "id"
type = "int"
required = true
unique = true
min = 1
[[field]]
name = "kind"
type = "string"
one_of = ["a", "b"]
[[field]]
name = "score"
type = "float"
min = 0
max = 1
[[field]]
name = "code"
type = "string"
regex = "[A-Z]{2}[0-9]"
[[field]]
name = "tags"
type = "tokens"
max_length = 2
[[field]]
name = "start"
type = "int"
[[field]]
name = "end"
type = "int"
[[rule]]
name = "ordered"
check = "start <= end"
"#;

    fn outcomes(csv: &str) -> Vec<Result<(), Vec<String>>> {
        let schema = Schema::parse(Path::new("s.toml"), SCHEMA).unwrap();
        let mut checker = Checker::new(&schema);
        let mut source = CsvSource::new(
            csv.as_bytes(),
            Path::new("d.csv"),
            &SourceOptions::default(),
            7,
        )
        .unwrap();
        let binding = checker
            .bind(source.columns(), Path::new("d.csv"), false)
            .unwrap();
        let mut record = Record::default();
        let mut results = Vec::new();
        while source.next_record(&mut record).unwrap() {
            results.push(
                checker
                    .check(&record, &binding)
                    .map(|_| ())
                    .map_err(|violations| {
                        violations
                            .into_iter()
                            .map(|violation| {
                                format!(
                                    "{}:{}",
                                    violation.field.unwrap_or_default(),
                                    violation.rule
                                )
                            })
                            .collect()
                    }),
            );
        }
        results
    }

    #[test]
    fn each_constraint_reports_its_rule() {
        let results = outcomes(
            "id,kind,score,code,tags,start,end\n\
             1,a,0.5,AB1,x y,1,2\n\
             ,a,0.5,AB1,x,1,2\n\
             two,a,0.5,AB1,x,1,2\n\
             0,c,1.5,ab1,x y z,1,2\n\
             3,b,0.1,AB1,,5,2\n\
             1,b,0.1,AB1,,,\n\
             4,b,-0.1,AB1,,,\n\
             5,a,NaN,AB1,,,\n",
        );
        assert_eq!(results[0], Ok(()));
        assert_eq!(results[1], Err(vec!["id:required".into()]));
        assert_eq!(results[2], Err(vec!["id:type".into()]));
        assert_eq!(
            results[3],
            Err(vec![
                "id:min".into(),
                "kind:one_of".into(),
                "score:max".into(),
                "code:regex".into(),
                "tags:max_length".into()
            ])
        );
        assert_eq!(results[4], Err(vec![":rule:ordered".into()]));
        assert_eq!(results[5], Err(vec!["id:unique".into()]));
        assert_eq!(results[6], Err(vec!["score:min".into()]));
        assert_eq!(results[7], Err(vec!["score:type".into()]));
    }

    #[test]
    fn a_rejected_record_does_not_take_its_unique_value() {
        let results =
            outcomes("id,kind,score,code,tags,start,end\n7,zz,,,,,\n7,a,,,,,\n7,a,,,,,\n");
        assert_eq!(results[0], Err(vec!["kind:one_of".into()]));
        assert_eq!(results[1], Ok(()));
        assert_eq!(results[2], Err(vec!["id:unique".into()]));
    }

    #[test]
    fn missing_required_column_is_a_file_error() {
        let schema = Schema::parse(Path::new("s.toml"), SCHEMA).unwrap();
        let checker = Checker::new(&schema);
        let error = checker
            .bind(&["kind".to_owned()], Path::new("d.csv"), false)
            .unwrap_err();
        assert!(error.to_string().contains("no column `id`"), "{error}");
    }

    #[test]
    fn json_values_are_typed_strictly() {
        let schema = Schema::parse(Path::new("s.toml"), SCHEMA).unwrap();
        let mut checker = Checker::new(&schema);
        let check = |checker: &mut Checker<'_>, json: &str| {
            let record = Record {
                body: Body::Json(serde_json::from_str(json).unwrap()),
                ..Record::default()
            };
            checker
                .check(&record, &Binding::Keys)
                .map(|_| ())
                .map_err(|violations| violations[0].rule.clone())
        };
        assert_eq!(
            check(
                &mut checker,
                r#"{"id": 1, "tags": ["a", "b"], "score": 0.25}"#
            ),
            Ok(())
        );
        assert_eq!(check(&mut checker, r#"{"id": "2"}"#), Err("type".into()));
        assert_eq!(
            check(&mut checker, r#"{"id": 3.0, "tags": [1]}"#),
            Err("type".into())
        );
        assert_eq!(check(&mut checker, r#"{"id": 4.0}"#), Ok(()));
        assert_eq!(
            check(&mut checker, r#"{"kind": "a"}"#),
            Err("required".into())
        );
    }
}
