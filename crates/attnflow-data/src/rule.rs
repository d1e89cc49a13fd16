//! Record-level rules: a small expression language over a record's fields,
//! such as `start <= end` or `status != "closed" or closed_at != null`.
//!
//! §6.1 defines `I(d)` per record; some criteria span fields, so a schema may
//! add rules that must hold for the whole record. Nulls follow SQL's
//! three-valued logic: a comparison or arithmetic with a null operand is
//! unknown, and a rule whose result is unknown does not fail the record
//! (use `required` to demand a value). `x == null` and `x != null` test for
//! nulls explicitly.

use crate::value::{FieldType, ValueRef};

/// A parse or type error in a rule, with the byte offset inside the rule text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// Byte offset in the rule text.
    pub offset: usize,
    /// Byte length of the faulty token (at least 1).
    pub length: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64, Option<i64>),
    Str(String),
    Ident(String),
    Op(&'static str),
    LeftParen,
    RightParen,
    Comma,
}

fn tokenize(text: &str) -> Result<Vec<(Token, usize, usize)>, RuleError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        let start = index;
        if byte.is_ascii_whitespace() {
            index += 1;
            continue;
        }
        if byte.is_ascii_digit()
            || (byte == b'.' && bytes.get(index + 1).is_some_and(u8::is_ascii_digit))
        {
            while index < bytes.len()
                && (bytes[index].is_ascii_alphanumeric()
                    || bytes[index] == b'.'
                    || bytes[index] == b'_'
                    || ((bytes[index] == b'-' || bytes[index] == b'+')
                        && matches!(bytes[index - 1], b'e' | b'E')))
            {
                index += 1;
            }
            let literal = &text[start..index];
            let integer = literal.parse::<i64>().ok();
            let number = literal.parse::<f64>().map_err(|_| RuleError {
                offset: start,
                length: index - start,
                message: format!("`{literal}` is not a number"),
            })?;
            tokens.push((Token::Number(number, integer), start, index));
            continue;
        }
        if byte.is_ascii_alphabetic() || byte == b'_' {
            while index < bytes.len()
                && (bytes[index].is_ascii_alphanumeric() || bytes[index] == b'_')
            {
                index += 1;
            }
            tokens.push((Token::Ident(text[start..index].to_owned()), start, index));
            continue;
        }
        if byte == b'"' || byte == b'\'' {
            let quote = byte;
            index += 1;
            let mut value = String::new();
            loop {
                let Some(&next) = bytes.get(index) else {
                    return Err(RuleError {
                        offset: start,
                        length: index - start,
                        message: "unterminated string literal".to_owned(),
                    });
                };
                if next == quote {
                    index += 1;
                    break;
                }
                let character = text[index..].chars().next().unwrap_or('\u{fffd}');
                value.push(character);
                index += character.len_utf8();
            }
            tokens.push((Token::Str(value), start, index));
            continue;
        }
        let two = text.get(index..index + 2).unwrap_or("");
        let op: Option<(&'static str, usize)> = match two {
            "<=" => Some(("<=", 2)),
            ">=" => Some((">=", 2)),
            "==" => Some(("==", 2)),
            "!=" => Some(("!=", 2)),
            "&&" => Some(("and", 2)),
            "||" => Some(("or", 2)),
            _ => match byte {
                b'<' => Some(("<", 1)),
                b'>' => Some((">", 1)),
                b'=' => Some(("==", 1)),
                b'+' => Some(("+", 1)),
                b'-' => Some(("-", 1)),
                b'*' => Some(("*", 1)),
                b'/' => Some(("/", 1)),
                b'!' => Some(("not", 1)),
                _ => None,
            },
        };
        if let Some((op, width)) = op {
            index += width;
            tokens.push((Token::Op(op), start, index));
            continue;
        }
        let token = match byte {
            b'(' => Token::LeftParen,
            b')' => Token::RightParen,
            b',' => Token::Comma,
            _ => {
                let character = text[index..].chars().next().unwrap_or('?');
                return Err(RuleError {
                    offset: index,
                    length: character.len_utf8(),
                    message: format!("unexpected character `{character}`"),
                });
            }
        };
        index += 1;
        tokens.push((token, start, index));
    }
    Ok(tokens)
}

/// A compiled rule expression.
#[derive(Debug, Clone)]
pub enum Expr {
    /// A literal value.
    Literal(Literal),
    /// The value of field number `index`.
    Field(usize),
    /// A unary operator (`-`, `not`).
    Unary(&'static str, Box<Expr>),
    /// A binary operator.
    Binary(&'static str, Box<Expr>, Box<Expr>),
    /// `len(x)`: characters of a string or tokens of a token list.
    Length(Box<Expr>),
    /// `abs(x)`.
    Abs(Box<Expr>),
}

/// A literal in a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `null`.
    Null,
    /// An integer literal.
    Int(i64),
    /// A float literal.
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
    /// A string literal.
    Str(String),
}

/// The static kind of a sub-expression, used to reject nonsense such as
/// `name + 1` when the schema is loaded rather than on every record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Number,
    Bool,
    Text,
    Tokens,
    Null,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Number => "number",
            Kind::Bool => "bool",
            Kind::Text => "string",
            Kind::Tokens => "token list",
            Kind::Null => "null",
        }
    }
}

struct Parser<'t> {
    tokens: Vec<(Token, usize, usize)>,
    position: usize,
    text_length: usize,
    fields: &'t [(String, FieldType)],
}

type Parsed = Result<(Expr, Kind, usize, usize), RuleError>;

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position).map(|(token, _, _)| token)
    }

    fn span(&self) -> (usize, usize) {
        self.tokens.get(self.position).map_or(
            (self.text_length, self.text_length + 1),
            |(_, start, end)| (*start, *end),
        )
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, RuleError> {
        let (start, end) = self.span();
        Err(RuleError {
            offset: start,
            length: (end - start).max(1),
            message: message.into(),
        })
    }

    fn is_op(&self, op: &str) -> bool {
        match self.peek() {
            Some(Token::Op(found)) => *found == op,
            Some(Token::Ident(word)) => (op == "and" || op == "or" || op == "not") && word == op,
            _ => false,
        }
    }

    fn binary(
        &mut self,
        ops: &[&'static str],
        next: fn(&mut Self) -> Parsed,
        check: fn(&'static str, Kind, Kind) -> Option<Kind>,
    ) -> Parsed {
        let (mut left, mut left_kind, start, mut end) = next(self)?;
        while let Some(op) = ops.iter().copied().find(|op| self.is_op(op)) {
            let op_span = self.span();
            self.position += 1;
            let (right, right_kind, _, right_end) = next(self)?;
            let Some(kind) = check(op, left_kind, right_kind) else {
                return Err(RuleError {
                    offset: op_span.0,
                    length: op_span.1 - op_span.0,
                    message: format!(
                        "`{op}` cannot combine a {} with a {}",
                        left_kind.name(),
                        right_kind.name()
                    ),
                });
            };
            left = Expr::Binary(op, Box::new(left), Box::new(right));
            left_kind = kind;
            end = right_end;
        }
        Ok((left, left_kind, start, end))
    }

    fn or(&mut self) -> Parsed {
        self.binary(&["or"], Self::and, logic_kind)
    }

    fn and(&mut self) -> Parsed {
        self.binary(&["and"], Self::not, logic_kind)
    }

    fn not(&mut self) -> Parsed {
        if self.is_op("not") {
            let (start, _) = self.span();
            self.position += 1;
            let (inner, kind, _, end) = self.not()?;
            if !matches!(kind, Kind::Bool | Kind::Null) {
                return Err(RuleError {
                    offset: start,
                    length: end - start,
                    message: format!("`not` needs a bool, found a {}", kind.name()),
                });
            }
            return Ok((Expr::Unary("not", Box::new(inner)), Kind::Bool, start, end));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Parsed {
        self.binary(
            &["==", "!=", "<=", ">=", "<", ">"],
            Self::sum,
            |op, left, right| {
                let ordered = !matches!(op, "==" | "!=");
                let comparable = left == right || left == Kind::Null || right == Kind::Null;
                let orderable = !matches!(left, Kind::Bool | Kind::Tokens) || !ordered;
                (comparable && orderable && !(left == Kind::Tokens && right != Kind::Null))
                    .then_some(Kind::Bool)
            },
        )
    }

    fn sum(&mut self) -> Parsed {
        self.binary(&["+", "-"], Self::product, arithmetic_kind)
    }

    fn product(&mut self) -> Parsed {
        self.binary(&["*", "/"], Self::unary, arithmetic_kind)
    }

    fn unary(&mut self) -> Parsed {
        if self.is_op("-") {
            let (start, _) = self.span();
            self.position += 1;
            let (inner, kind, _, end) = self.unary()?;
            if kind != Kind::Number {
                return Err(RuleError {
                    offset: start,
                    length: end - start,
                    message: format!("`-` needs a number, found a {}", kind.name()),
                });
            }
            return Ok((Expr::Unary("-", Box::new(inner)), Kind::Number, start, end));
        }
        self.primary()
    }

    fn primary(&mut self) -> Parsed {
        let (start, end) = self.span();
        let Some(token) = self.peek().cloned() else {
            return self.error("expression ends too early");
        };
        self.position += 1;
        match token {
            Token::Number(value, integer) => Ok((
                Expr::Literal(integer.map_or(Literal::Float(value), Literal::Int)),
                Kind::Number,
                start,
                end,
            )),
            Token::Str(text) => Ok((Expr::Literal(Literal::Str(text)), Kind::Text, start, end)),
            Token::LeftParen => {
                let (inner, kind, _, _) = self.or()?;
                if self.peek() != Some(&Token::RightParen) {
                    return self.error("expected `)`");
                }
                let (_, close) = self.span();
                self.position += 1;
                Ok((inner, kind, start, close))
            }
            Token::Ident(word) => match word.as_str() {
                "true" => Ok((Expr::Literal(Literal::Bool(true)), Kind::Bool, start, end)),
                "false" => Ok((Expr::Literal(Literal::Bool(false)), Kind::Bool, start, end)),
                "null" => Ok((Expr::Literal(Literal::Null), Kind::Null, start, end)),
                "len" | "abs" if self.peek() == Some(&Token::LeftParen) => {
                    self.position += 1;
                    let (inner, kind, inner_start, inner_end) = self.or()?;
                    if self.peek() != Some(&Token::RightParen) {
                        return self.error("expected `)`");
                    }
                    let (_, close) = self.span();
                    self.position += 1;
                    let fits = if word == "len" {
                        matches!(kind, Kind::Text | Kind::Tokens)
                    } else {
                        kind == Kind::Number
                    };
                    if !fits {
                        return Err(RuleError {
                            offset: inner_start,
                            length: inner_end - inner_start,
                            message: format!("`{word}` cannot take a {}", kind.name()),
                        });
                    }
                    let expr = if word == "len" {
                        Expr::Length(Box::new(inner))
                    } else {
                        Expr::Abs(Box::new(inner))
                    };
                    Ok((expr, Kind::Number, start, close))
                }
                _ => {
                    let Some(index) = self.fields.iter().position(|(name, _)| *name == word) else {
                        return Err(RuleError {
                            offset: start,
                            length: end - start,
                            message: format!("unknown field `{word}`"),
                        });
                    };
                    let kind = match self.fields[index].1 {
                        FieldType::Int | FieldType::Float => Kind::Number,
                        FieldType::Bool => Kind::Bool,
                        FieldType::String => Kind::Text,
                        FieldType::Tokens => Kind::Tokens,
                    };
                    Ok((Expr::Field(index), kind, start, end))
                }
            },
            Token::Op(op) => Err(RuleError {
                offset: start,
                length: end - start,
                message: format!("unexpected `{op}`"),
            }),
            Token::RightParen | Token::Comma => Err(RuleError {
                offset: start,
                length: end - start,
                message: "unexpected punctuation".to_owned(),
            }),
        }
    }
}

fn logic_kind(_op: &'static str, left: Kind, right: Kind) -> Option<Kind> {
    (matches!(left, Kind::Bool | Kind::Null) && matches!(right, Kind::Bool | Kind::Null))
        .then_some(Kind::Bool)
}

fn arithmetic_kind(_op: &'static str, left: Kind, right: Kind) -> Option<Kind> {
    (matches!(left, Kind::Number | Kind::Null) && matches!(right, Kind::Number | Kind::Null))
        .then_some(Kind::Number)
}

/// Compiles `text` against the schema's fields (name and type, in order).
/// The result must be a bool expression.
pub fn compile(text: &str, fields: &[(String, FieldType)]) -> Result<Expr, RuleError> {
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        tokens,
        position: 0,
        text_length: text.len(),
        fields,
    };
    let (expr, kind, start, end) = parser.or()?;
    if parser.position < parser.tokens.len() {
        return parser.error("unexpected text after the expression");
    }
    if kind != Kind::Bool {
        return Err(RuleError {
            offset: start,
            length: (end - start).max(1),
            message: format!(
                "a rule must be a condition (true or false), this is a {}",
                kind.name()
            ),
        });
    }
    Ok(expr)
}

/// The value of a sub-expression during evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Eval<'a> {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(&'a str),
    Count(usize),
}

impl Eval<'_> {
    fn number(self) -> Option<f64> {
        match self {
            Eval::Int(value) => Some(value as f64),
            Eval::Float(value) => Some(value),
            Eval::Count(value) => Some(value as f64),
            _ => None,
        }
    }

    fn integer(self) -> Option<i64> {
        match self {
            Eval::Int(value) => Some(value),
            Eval::Count(value) => i64::try_from(value).ok(),
            _ => None,
        }
    }
}

impl Expr {
    /// Evaluates the rule on a record's typed values: `Some(true)` holds,
    /// `Some(false)` fails, `None` is unknown (a null was involved).
    pub fn holds(&self, values: &[ValueRef<'_>]) -> Option<bool> {
        match self.eval(values) {
            Eval::Bool(value) => Some(value),
            _ => None,
        }
    }

    fn eval<'a>(&'a self, values: &'a [ValueRef<'a>]) -> Eval<'a> {
        match self {
            Expr::Literal(literal) => match literal {
                Literal::Null => Eval::Null,
                Literal::Int(value) => Eval::Int(*value),
                Literal::Float(value) => Eval::Float(*value),
                Literal::Bool(value) => Eval::Bool(*value),
                Literal::Str(text) => Eval::Str(text),
            },
            Expr::Field(index) => match values.get(*index) {
                Some(ValueRef::Int(value)) => Eval::Int(*value),
                Some(ValueRef::Float(value)) => Eval::Float(*value),
                Some(ValueRef::Bool(value)) => Eval::Bool(*value),
                Some(ValueRef::Str(text)) => Eval::Str(text),
                Some(ValueRef::Tokens(tokens)) => Eval::Count(tokens.len()),
                Some(ValueRef::Null) | None => Eval::Null,
            },
            Expr::Length(inner) => match inner.eval(values) {
                Eval::Str(text) => Eval::Count(text.chars().count()),
                Eval::Count(count) => Eval::Count(count),
                _ => Eval::Null,
            },
            Expr::Abs(inner) => match inner.eval(values) {
                Eval::Int(value) => value
                    .checked_abs()
                    .map_or(Eval::Float((value as f64).abs()), Eval::Int),
                Eval::Float(value) => Eval::Float(value.abs()),
                other => other,
            },
            Expr::Unary(op, inner) => match (*op, inner.eval(values)) {
                ("not", Eval::Bool(value)) => Eval::Bool(!value),
                ("-", Eval::Int(value)) => value
                    .checked_neg()
                    .map_or(Eval::Float(-(value as f64)), Eval::Int),
                ("-", Eval::Float(value)) => Eval::Float(-value),
                ("-", Eval::Count(value)) => Eval::Float(-(value as f64)),
                _ => Eval::Null,
            },
            Expr::Binary(op, left, right) => {
                let left = left.eval(values);
                // Kleene logic: `false and unknown` is false, `true or unknown` is true.
                if *op == "and" && left == Eval::Bool(false) {
                    return left;
                }
                if *op == "or" && left == Eval::Bool(true) {
                    return left;
                }
                let right = right.eval(values);
                binary(op, left, right)
            }
        }
    }
}

fn binary<'a>(op: &str, left: Eval<'a>, right: Eval<'a>) -> Eval<'a> {
    match op {
        "and" | "or" => match (left, right) {
            (Eval::Bool(a), Eval::Bool(b)) => Eval::Bool(if op == "and" { a && b } else { a || b }),
            (_, Eval::Bool(false)) if op == "and" => Eval::Bool(false),
            (_, Eval::Bool(true)) if op == "or" => Eval::Bool(true),
            _ => Eval::Null,
        },
        "==" | "!=" => {
            let equal = match (left, right) {
                (Eval::Null, Eval::Null) => true,
                (Eval::Null, _) | (_, Eval::Null) => false,
                (Eval::Str(a), Eval::Str(b)) => a == b,
                (Eval::Bool(a), Eval::Bool(b)) => a == b,
                (a, b) => match (a.integer(), b.integer()) {
                    (Some(x), Some(y)) => x == y,
                    _ => a.number() == b.number(),
                },
            };
            Eval::Bool(equal == (op == "=="))
        }
        "<" | "<=" | ">" | ">=" => {
            let ordering = match (left, right) {
                (Eval::Str(a), Eval::Str(b)) => Some(a.cmp(b)),
                (a, b) => match (a.integer(), b.integer()) {
                    (Some(x), Some(y)) => Some(x.cmp(&y)),
                    _ => match (a.number(), b.number()) {
                        (Some(x), Some(y)) => x.partial_cmp(&y),
                        _ => None,
                    },
                },
            };
            let Some(ordering) = ordering else {
                return Eval::Null;
            };
            Eval::Bool(match op {
                "<" => ordering.is_lt(),
                "<=" => ordering.is_le(),
                ">" => ordering.is_gt(),
                _ => ordering.is_ge(),
            })
        }
        _ => {
            if let (Some(a), Some(b)) = (left.integer(), right.integer()) {
                let exact = match op {
                    "+" => a.checked_add(b),
                    "-" => a.checked_sub(b),
                    "*" => a.checked_mul(b),
                    _ => None,
                };
                if let Some(value) = exact {
                    return Eval::Int(value);
                }
            }
            match (left.number(), right.number()) {
                (Some(a), Some(b)) => Eval::Float(match op {
                    "+" => a + b,
                    "-" => a - b,
                    "*" => a * b,
                    _ => a / b,
                }),
                _ => Eval::Null,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Vec<(String, FieldType)> {
        vec![
            ("start".into(), FieldType::Int),
            ("end".into(), FieldType::Int),
            ("status".into(), FieldType::String),
            ("ratio".into(), FieldType::Float),
            ("tags".into(), FieldType::Tokens),
        ]
    }

    fn eval(rule: &str, values: &[ValueRef<'_>]) -> Option<bool> {
        compile(rule, &fields()).expect(rule).holds(values)
    }

    #[test]
    fn comparisons_arithmetic_and_nulls() {
        let values = [
            ValueRef::Int(3),
            ValueRef::Int(5),
            ValueRef::Str("open"),
            ValueRef::Null,
            ValueRef::Tokens(vec!["a", "b"]),
        ];
        assert_eq!(eval("start <= end", &values), Some(true));
        assert_eq!(eval("start > end", &values), Some(false));
        assert_eq!(eval("end - start == 2", &values), Some(true));
        assert_eq!(
            eval("start * 2 + 1 > end and status == \"open\"", &values),
            Some(true)
        );
        assert_eq!(
            eval("ratio < 1", &values),
            None,
            "null comparison is unknown"
        );
        assert_eq!(eval("ratio == null", &values), Some(true));
        assert_eq!(eval("ratio < 1 or start < end", &values), Some(true));
        assert_eq!(eval("ratio < 1 and start > end", &values), Some(false));
        assert_eq!(
            eval("len(tags) == 2 and len(status) == 4", &values),
            Some(true)
        );
        assert_eq!(eval("not (start > end)", &values), Some(true));
        assert_eq!(eval("-start < 0 && abs(-start) == 3", &values), Some(true));
        assert_eq!(
            eval("status != 'closed' || end == null", &values),
            Some(true)
        );
        assert_eq!(eval("start / 2 == 1.5", &values), Some(true));
    }

    #[test]
    fn large_integers_compare_exactly() {
        let values = [
            ValueRef::Int(9_007_199_254_740_993),
            ValueRef::Int(9_007_199_254_740_992),
            ValueRef::Null,
            ValueRef::Null,
            ValueRef::Null,
        ];
        assert_eq!(eval("start > end", &values), Some(true));
    }

    #[test]
    fn errors_point_at_the_fault() {
        let error = compile("start <= nope", &fields()).unwrap_err();
        assert_eq!((error.offset, error.length), (9, 4));
        assert!(error.message.contains("unknown field"));
        let error = compile("status + 1 > 2", &fields()).unwrap_err();
        assert_eq!(error.offset, 7);
        let error = compile("start + end", &fields()).unwrap_err();
        assert!(error.message.contains("condition"));
        let error = compile("start < (end", &fields()).unwrap_err();
        assert!(error.message.contains(")"));
        let error = compile("start < end end", &fields()).unwrap_err();
        assert_eq!(error.offset, 12);
        let error = compile("start # end", &fields()).unwrap_err();
        assert_eq!(error.offset, 6);
        assert!(compile("\"open", &fields()).is_err());
        assert!(compile("", &fields()).is_err());
    }
}
