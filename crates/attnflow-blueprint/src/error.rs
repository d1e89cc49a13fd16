//! Typed errors that carry the place of the fault: file, line, column, byte
//! span and, where there is one, the node.

use std::ops::Range;

use serde::Serialize;

/// Where in a spec file a fault sits. Line and column are 1-based; `span` is
/// the byte range in the source text, kept so a front end can draw a snippet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// The file name as the user gave it (or a label for text not from a file).
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// Byte range in the source text.
    pub span: Range<usize>,
}

impl Location {
    /// Computes line and column of the start of `span` in `source`.
    pub fn from_span(file: &str, source: &str, span: Range<usize>) -> Self {
        let start = span.start.min(source.len());
        let before = source.get(..start).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |index| index + 1);
        let column = before
            .get(line_start..)
            .map_or(0, |text| text.chars().count())
            + 1;
        Self {
            file: file.to_string(),
            line,
            column,
            span: start..span.end.clamp(start, source.len()),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Everything that can be wrong with a blueprint spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SpecErrorKind {
    /// The text is not valid TOML.
    #[error("invalid TOML: {message}")]
    Syntax {
        /// The parser's message.
        message: String,
    },
    /// A table or value has the wrong TOML type.
    #[error("`{field}` must be {expected}, found {found}")]
    WrongType {
        /// The key whose value is wrong.
        field: String,
        /// What was expected.
        expected: String,
        /// What was found.
        found: String,
    },
    /// A required key is absent.
    #[error("missing `{field}`{context}")]
    Missing {
        /// The missing key.
        field: String,
        /// Extra context (such as the op that needs it), with leading space.
        context: String,
    },
    /// A top-level section or block key that the format does not know.
    #[error("unknown key `{field}` in {section} (known: {known})")]
    UnknownKey {
        /// The unknown key.
        field: String,
        /// Where it appeared.
        section: String,
        /// The keys that are allowed there.
        known: String,
    },
    /// A node's `op` names no known operation.
    #[error("unknown op `{op}` (known ops: {known})")]
    UnknownOp {
        /// The op as written.
        op: String,
        /// The op names that exist.
        known: String,
    },
    /// A node carries an attribute its op does not take.
    #[error("unknown attribute `{attribute}` for op `{op}` (allowed: {allowed})")]
    UnknownAttribute {
        /// The attribute as written.
        attribute: String,
        /// The node's op.
        op: String,
        /// The attributes that op takes.
        allowed: String,
    },
    /// An attribute's value is not one of the accepted ones.
    #[error("attribute `{attribute}`: {message}")]
    InvalidAttribute {
        /// The attribute.
        attribute: String,
        /// What is wrong with it.
        message: String,
    },
    /// A node names an input that no node or block provides.
    #[error("unknown input `{input}`{hint}")]
    UnknownInput {
        /// The input name as written.
        input: String,
        /// A suggestion, with leading text, or empty.
        hint: String,
    },
    /// Two nodes (or a node and a block) share a name.
    #[error("duplicate name `{name}` (first defined at line {first_line})")]
    DuplicateName {
        /// The repeated name.
        name: String,
        /// Line of the first definition.
        first_line: usize,
    },
    /// The graph has a cycle through the listed nodes.
    #[error("cycle in the graph: {}", path.join(" -> "))]
    Cycle {
        /// The nodes on the cycle, first repeated at the end.
        path: Vec<String>,
    },
    /// An expression uses a dimension that is not declared.
    #[error("unknown dimension `{name}` in `{expression}`{hint}")]
    UnknownDimension {
        /// The undeclared name.
        name: String,
        /// The expression it appears in.
        expression: String,
        /// A suggestion, with leading text, or empty.
        hint: String,
    },
    /// Dimensions refer to each other in a loop.
    #[error("dimensions refer to each other in a loop: {}", path.join(" -> "))]
    DimensionCycle {
        /// The dimensions on the loop.
        path: Vec<String>,
    },
    /// An expression is not valid syntax.
    #[error("cannot parse expression `{expression}`: {message}")]
    ExpressionSyntax {
        /// The expression text.
        expression: String,
        /// What is wrong.
        message: String,
    },
    /// A dimension or size is not a positive whole number.
    #[error("`{expression}` is not a whole number: {message}")]
    NonInteger {
        /// The expression text or value.
        expression: String,
        /// Why.
        message: String,
    },
    /// A division inside an expression or a head split does not come out even.
    #[error("`{expression}`: {numerator} is not divisible by {denominator}")]
    NotDivisible {
        /// The expression text (or the implied split, such as `d_model / heads`).
        expression: String,
        /// The left operand's value.
        numerator: i128,
        /// The right operand's value.
        denominator: i128,
    },
    /// Shapes do not agree where they must (add, matmul, tie, concat...).
    #[error("shape mismatch at `{op}`: {message}")]
    ShapeMismatch {
        /// The op where shapes meet.
        op: String,
        /// The shapes involved.
        message: String,
    },
    /// An op got the wrong number of inputs.
    #[error("op `{op}` takes {expected} input(s), got {found}")]
    InputCount {
        /// The op.
        op: String,
        /// How many it takes, in words.
        expected: String,
        /// How many were given.
        found: usize,
    },
    /// A `--set` override names no declared dimension or has a bad value.
    #[error("override `{text}`: {message}")]
    Override {
        /// The override as given.
        text: String,
        /// What is wrong.
        message: String,
    },
    /// A size or tensor beyond [`crate::ops::MAX_ELEMENTS`].
    #[error("too large: `{expression}` (sizes and tensors are limited to 2^48 elements)")]
    Overflow {
        /// What overflowed.
        expression: String,
    },
}

/// A fault in a spec, with its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{location}: {}{kind}", node.as_ref().map(|name| format!("node `{name}`: ")).unwrap_or_default())]
pub struct SpecError {
    /// File, line, column and byte span of the fault.
    pub location: Location,
    /// The node at fault, when the fault belongs to one.
    pub node: Option<String>,
    /// What is wrong.
    pub kind: SpecErrorKind,
}

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path as given.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The spec is malformed or inconsistent.
    #[error(transparent)]
    Spec(#[from] Box<SpecError>),
    /// A request about a checked blueprint is invalid (such as scaling a
    /// dimension the spec does not declare).
    #[error("{0}")]
    Request(String),
}

impl Error {
    /// The spec fault, when this is one (front ends draw a snippet from it).
    pub fn spec(&self) -> Option<&SpecError> {
        match self {
            Error::Spec(error) => Some(error),
            _ => None,
        }
    }
}

impl attnflow_base::Classified for Error {
    fn fault(&self) -> attnflow_base::Fault {
        match self {
            // A spec that cannot be read is the user's path (or file) at fault.
            Error::Io { .. } | Error::Spec(_) | Error::Request(_) => attnflow_base::Fault::BadInput,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let source = "a = 1\nbé = 2\n";
        let location = Location::from_span("f.toml", source, 10..11);
        assert_eq!((location.line, location.column), (2, 4));
        let start = Location::from_span("f.toml", source, 0..1);
        assert_eq!((start.line, start.column), (1, 1));
        let past_end = Location::from_span("f.toml", source, 100..200);
        assert_eq!(past_end.span, source.len()..source.len());
    }
}
