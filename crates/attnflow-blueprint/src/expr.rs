//! Integer dimension expressions such as `4 * d_model` or `d_model / heads`.
//!
//! Sizes are whole numbers, so the arithmetic is exact: a division that
//! leaves a remainder is an error, not a rounding, because a silently rounded
//! head size is the classic way a blueprint and its checkpoint disagree.

use std::collections::BTreeMap;

use serde::Serialize;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expr {
    /// A literal whole number.
    Number(i128),
    /// A named dimension.
    Dim(String),
    /// `-x`.
    Negate(Box<Expr>),
    /// `a op b`.
    Binary(Box<Expr>, Operator, Box<Expr>),
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    /// `+`
    Add,
    /// `-`
    Subtract,
    /// `*`
    Multiply,
    /// `/`, exact division only.
    Divide,
}

/// Why an expression could not be parsed or evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExprError {
    /// Not valid syntax.
    Syntax(String),
    /// A name that the environment does not hold.
    UnknownDimension(String),
    /// A fractional literal such as `2.5`.
    NonInteger(String),
    /// `a / b` with a remainder, or division by zero.
    NotDivisible {
        /// Value of `a`.
        numerator: i128,
        /// Value of `b`.
        denominator: i128,
    },
    /// The value left the range of 128-bit integers.
    Overflow,
}

impl Expr {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Expr, ExprError> {
        let tokens = tokenize(text)?;
        if tokens.is_empty() {
            return Err(ExprError::Syntax("empty expression".into()));
        }
        let mut parser = Parser {
            tokens,
            position: 0,
        };
        let expr = parser.sum()?;
        if let Some(token) = parser.tokens.get(parser.position) {
            return Err(ExprError::Syntax(format!("unexpected `{}`", token.text())));
        }
        Ok(expr)
    }

    /// The dimension names this expression uses, in order of appearance.
    pub fn dims(&self) -> Vec<&str> {
        let mut names = Vec::new();
        self.collect_dims(&mut names);
        names
    }

    fn collect_dims<'a>(&'a self, names: &mut Vec<&'a str>) {
        match self {
            Expr::Number(_) => {}
            Expr::Dim(name) => names.push(name),
            Expr::Negate(inner) => inner.collect_dims(names),
            Expr::Binary(left, _, right) => {
                left.collect_dims(names);
                right.collect_dims(names);
            }
        }
    }

    /// Evaluates with exact integer arithmetic against `env`.
    pub fn eval(&self, env: &BTreeMap<String, i128>) -> Result<i128, ExprError> {
        match self {
            Expr::Number(value) => Ok(*value),
            Expr::Dim(name) => env
                .get(name)
                .copied()
                .ok_or_else(|| ExprError::UnknownDimension(name.clone())),
            Expr::Negate(inner) => inner.eval(env)?.checked_neg().ok_or(ExprError::Overflow),
            Expr::Binary(left, operator, right) => {
                let left = left.eval(env)?;
                let right = right.eval(env)?;
                match operator {
                    Operator::Add => left.checked_add(right).ok_or(ExprError::Overflow),
                    Operator::Subtract => left.checked_sub(right).ok_or(ExprError::Overflow),
                    Operator::Multiply => left.checked_mul(right).ok_or(ExprError::Overflow),
                    Operator::Divide => {
                        if right == 0 || left % right != 0 {
                            Err(ExprError::NotDivisible {
                                numerator: left,
                                denominator: right,
                            })
                        } else {
                            Ok(left / right)
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(i128),
    Name(String),
    Symbol(char),
}

impl Token {
    fn text(&self) -> String {
        match self {
            Token::Number(value) => value.to_string(),
            Token::Name(name) => name.clone(),
            Token::Symbol(symbol) => symbol.to_string(),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, ExprError> {
    let mut tokens = Vec::new();
    let characters: Vec<char> = text.chars().collect();
    let mut index = 0;
    while index < characters.len() {
        let character = characters[index];
        if character.is_whitespace() {
            index += 1;
        } else if character.is_ascii_digit() {
            let start = index;
            while index < characters.len()
                && (characters[index].is_ascii_digit() || characters[index] == '_')
            {
                index += 1;
            }
            if index < characters.len()
                && (characters[index] == '.'
                    || characters[index] == 'e'
                    || characters[index] == 'E')
            {
                let mut end = index;
                while end < characters.len()
                    && (characters[end].is_ascii_alphanumeric() || characters[end] == '.')
                {
                    end += 1;
                }
                let literal: String = characters[start..end].iter().collect();
                return Err(ExprError::NonInteger(literal));
            }
            let literal: String = characters[start..index]
                .iter()
                .filter(|c| **c != '_')
                .collect();
            let value = literal.parse::<i128>().map_err(|_| ExprError::Overflow)?;
            tokens.push(Token::Number(value));
        } else if character.is_alphabetic() || character == '_' {
            let start = index;
            while index < characters.len()
                && (characters[index].is_alphanumeric() || characters[index] == '_')
            {
                index += 1;
            }
            tokens.push(Token::Name(characters[start..index].iter().collect()));
        } else if "+-*/()".contains(character) {
            tokens.push(Token::Symbol(character));
            index += 1;
        } else {
            return Err(ExprError::Syntax(format!(
                "unexpected character `{character}`"
            )));
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
}

impl Parser {
    fn peek_symbol(&self) -> Option<char> {
        match self.tokens.get(self.position) {
            Some(Token::Symbol(symbol)) => Some(*symbol),
            _ => None,
        }
    }

    fn sum(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.product()?;
        while let Some(symbol @ ('+' | '-')) = self.peek_symbol() {
            self.position += 1;
            let right = self.product()?;
            let operator = if symbol == '+' {
                Operator::Add
            } else {
                Operator::Subtract
            };
            left = Expr::Binary(Box::new(left), operator, Box::new(right));
        }
        Ok(left)
    }

    fn product(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.unary()?;
        while let Some(symbol @ ('*' | '/')) = self.peek_symbol() {
            self.position += 1;
            let right = self.unary()?;
            let operator = if symbol == '*' {
                Operator::Multiply
            } else {
                Operator::Divide
            };
            left = Expr::Binary(Box::new(left), operator, Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.peek_symbol() == Some('-') {
            self.position += 1;
            return Ok(Expr::Negate(Box::new(self.unary()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr, ExprError> {
        let token = self
            .tokens
            .get(self.position)
            .cloned()
            .ok_or_else(|| ExprError::Syntax("expression ends too early".into()))?;
        self.position += 1;
        match token {
            Token::Number(value) => Ok(Expr::Number(value)),
            Token::Name(name) => Ok(Expr::Dim(name)),
            Token::Symbol('(') => {
                let inner = self.sum()?;
                if self.peek_symbol() != Some(')') {
                    return Err(ExprError::Syntax("missing `)`".into()));
                }
                self.position += 1;
                Ok(inner)
            }
            Token::Symbol(symbol) => Err(ExprError::Syntax(format!("unexpected `{symbol}`"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, i128)]) -> BTreeMap<String, i128> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), *value))
            .collect()
    }

    #[test]
    fn precedence_and_parentheses() {
        let values = env(&[("d_model", 768), ("heads", 12)]);
        let eval = |text: &str| Expr::parse(text).unwrap().eval(&values).unwrap();
        assert_eq!(eval("4 * d_model"), 3072);
        assert_eq!(eval("d_model / heads"), 64);
        assert_eq!(eval("2 + 3 * 4"), 14);
        assert_eq!(eval("(2 + 3) * 4"), 20);
        assert_eq!(eval("10 - 4 - 3"), 3);
        assert_eq!(eval("-2 * -3"), 6);
        assert_eq!(eval("1_024"), 1024);
        assert_eq!(eval("2 * d_model / 3 * heads / 8"), 768);
    }

    #[test]
    fn errors_are_typed() {
        let values = env(&[("d_model", 768), ("heads", 10)]);
        assert_eq!(
            Expr::parse("d_model / heads").unwrap().eval(&values),
            Err(ExprError::NotDivisible {
                numerator: 768,
                denominator: 10
            })
        );
        assert_eq!(
            Expr::parse("1 / 0").unwrap().eval(&values),
            Err(ExprError::NotDivisible {
                numerator: 1,
                denominator: 0
            })
        );
        assert_eq!(
            Expr::parse("d_modle * 2").unwrap().eval(&values),
            Err(ExprError::UnknownDimension("d_modle".into()))
        );
        assert_eq!(
            Expr::parse("2.5 * heads"),
            Err(ExprError::NonInteger("2.5".into()))
        );
        assert!(matches!(Expr::parse("2 +"), Err(ExprError::Syntax(_))));
        assert!(matches!(Expr::parse("(2"), Err(ExprError::Syntax(_))));
        assert!(matches!(Expr::parse("2 ^ 3"), Err(ExprError::Syntax(_))));
        assert!(matches!(Expr::parse(""), Err(ExprError::Syntax(_))));
        assert!(matches!(Expr::parse("2 3"), Err(ExprError::Syntax(_))));
        let huge = Expr::parse("170141183460469231731687303715884105727 * 2").unwrap();
        assert_eq!(huge.eval(&values), Err(ExprError::Overflow));
    }
}
