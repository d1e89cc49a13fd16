//! The spec file format: TOML read with every key's and value's byte span
//! kept, so that each later fault can name its file, line and column.
//!
//! ```toml
//! [model]
//! name = "tiny"
//!
//! [dims]
//! batch = 2
//! seq = 16
//! d_model = 32
//! d_ff = "4 * d_model"      # an expression over other dims
//!
//! [[node]]
//! name = "tokens"
//! op = "input"
//! shape = ["batch", "seq"]
//! dtype = "index"
//!
//! [[block]]                 # repeated: nodes are named block.3.attn
//! name = "block"
//! repeat = "layers"
//! input = "embed"           # what layer 0 reads as `in`
//! output = "residual"       # what layer l+1 reads as `in`
//!
//! [[block.node]]
//! name = "attn"
//! op = "attention"
//! input = "in"
//! heads = "heads"
//! ```

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::error::{Location, SpecError, SpecErrorKind};

/// A value with the byte span it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sp<T> {
    /// The value.
    pub value: T,
    /// Byte range in the spec text.
    pub span: Range<usize>,
}

/// An attribute value as written in the spec, before it is interpreted.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// A TOML integer.
    Integer(i128),
    /// A TOML float.
    Float(f64),
    /// A TOML boolean.
    Bool(bool),
    /// A TOML string (a name, a choice or a dimension expression).
    Text(String),
    /// A TOML array, each element with its own span.
    List(Vec<Sp<AttrValue>>),
    /// A table or date: never valid as an attribute, kept to name it in errors.
    Other(&'static str),
}

impl AttrValue {
    /// The TOML type name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            AttrValue::Integer(_) => "an integer",
            AttrValue::Float(_) => "a float",
            AttrValue::Bool(_) => "a boolean",
            AttrValue::Text(_) => "a string",
            AttrValue::List(_) => "an array",
            AttrValue::Other(name) => name,
        }
    }
}

/// One `key = value` of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    /// The key.
    pub key: Sp<String>,
    /// The value.
    pub value: Sp<AttrValue>,
}

/// A node as declared (inside a block, names are local to one layer).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    /// The node's name.
    pub name: Sp<String>,
    /// The op name as written.
    pub op: Sp<String>,
    /// Input names as written (`input = "x"` or `input = ["a", "b"]`).
    pub inputs: Vec<Sp<String>>,
    /// Every other key.
    pub attributes: Vec<Attribute>,
    /// Span of the whole node table (used to order nodes as declared).
    pub span: Range<usize>,
}

impl NodeSpec {
    /// The attribute called `key`, if present.
    pub fn attribute(&self, key: &str) -> Option<&Attribute> {
        self.attributes
            .iter()
            .find(|attribute| attribute.key.value == key)
    }
}

/// A repeated block of nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockSpec {
    /// The block's name; per-layer nodes are called `name.layer.local`.
    pub name: Sp<String>,
    /// How many layers: an integer or a dimension expression.
    pub repeat: Sp<AttrValue>,
    /// The node that layer 0 reads as `in`.
    pub input: Sp<String>,
    /// The local node whose output the next layer reads as `in`, and that the
    /// block's name stands for after the block.
    pub output: Sp<String>,
    /// The nodes of one layer.
    pub nodes: Vec<NodeSpec>,
    /// Span of the block table.
    pub span: Range<usize>,
}

/// A dimension declaration in `[dims]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DimSpec {
    /// The dimension's name.
    pub name: Sp<String>,
    /// Its value: an integer or an expression string.
    pub value: Sp<AttrValue>,
}

/// A parsed but not yet checked spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The file name used in messages.
    pub file: String,
    /// The full text (kept to compute line and column of any span).
    pub source: String,
    /// `[model] name`, or the file stem.
    pub name: String,
    /// `[model] description`, if any.
    pub description: Option<String>,
    /// `[dims]` in the order written.
    pub dims: Vec<DimSpec>,
    /// Top-level nodes.
    pub nodes: Vec<NodeSpec>,
    /// Repeated blocks.
    pub blocks: Vec<BlockSpec>,
}

const TOP_LEVEL_KEYS: &[&str] = &["model", "dims", "node", "block"];
const MODEL_KEYS: &[&str] = &["name", "description", "reference"];
const BLOCK_KEYS: &[&str] = &["name", "repeat", "input", "output", "node", "doc"];

impl Spec {
    /// Reads and parses the spec at `path`.
    pub fn from_file(path: &std::path::Path) -> crate::Result<Spec> {
        let source = std::fs::read_to_string(path).map_err(|source| crate::Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Spec::parse(&path.display().to_string(), &source)?)
    }

    /// Parses `source`; `file` names it in messages.
    pub fn parse(file: &str, source: &str) -> Result<Spec, Box<SpecError>> {
        let context = Context { file, source };
        let document = DeTable::parse(source).map_err(|error| {
            let span = error.span().unwrap_or(0..0);
            context.error(
                span,
                None,
                SpecErrorKind::Syntax {
                    message: error.message().trim().to_string(),
                },
            )
        })?;
        let document = document.get_ref();
        let mut spec = Spec {
            file: file.to_string(),
            source: source.to_string(),
            name: std::path::Path::new(file).file_stem().map_or_else(
                || "blueprint".to_string(),
                |stem| stem.to_string_lossy().into_owned(),
            ),
            description: None,
            dims: Vec::new(),
            nodes: Vec::new(),
            blocks: Vec::new(),
        };
        for (key, value) in document.iter() {
            match key.get_ref().as_ref() {
                "model" => {
                    let table = context.table(value, "model")?;
                    for (model_key, model_value) in table.iter() {
                        let field = model_key.get_ref().as_ref();
                        match field {
                            "name" => spec.name = context.string(model_value, "name")?.value,
                            "description" => {
                                spec.description = Some(context.string(model_value, field)?.value)
                            }
                            "reference" => {
                                context.string(model_value, field)?;
                            }
                            _ => return Err(context.unknown_key(model_key, "[model]", MODEL_KEYS)),
                        }
                    }
                }
                "dims" => {
                    let table = context.table(value, "dims")?;
                    for (name, dim_value) in table.iter() {
                        spec.dims.push(DimSpec {
                            name: Sp {
                                value: name.get_ref().to_string(),
                                span: name.span(),
                            },
                            value: context.attr_value(dim_value),
                        });
                    }
                    spec.dims.sort_by_key(|dim| dim.name.span.start);
                }
                "node" => {
                    for item in context.array(value, "node")? {
                        spec.nodes.push(context.node(item)?);
                    }
                }
                "block" => {
                    for item in context.array(value, "block")? {
                        spec.blocks.push(context.block(item)?);
                    }
                }
                _ => return Err(context.unknown_key(key, "the top level", TOP_LEVEL_KEYS)),
            }
        }
        Ok(spec)
    }

    /// Builds a [`SpecError`] at `span` of this spec's text.
    pub fn error(
        &self,
        span: Range<usize>,
        node: Option<&str>,
        kind: SpecErrorKind,
    ) -> Box<SpecError> {
        Context {
            file: &self.file,
            source: &self.source,
        }
        .error(span, node, kind)
    }
}

struct Context<'a> {
    file: &'a str,
    source: &'a str,
}

impl Context<'_> {
    fn error(&self, span: Range<usize>, node: Option<&str>, kind: SpecErrorKind) -> Box<SpecError> {
        Box::new(SpecError {
            location: Location::from_span(self.file, self.source, span),
            node: node.map(str::to_string),
            kind,
        })
    }

    fn wrong_type(
        &self,
        value: &Spanned<DeValue<'_>>,
        field: &str,
        expected: &str,
    ) -> Box<SpecError> {
        self.error(
            value.span(),
            None,
            SpecErrorKind::WrongType {
                field: field.to_string(),
                expected: expected.to_string(),
                found: self.attr_value(value).value.type_name().to_string(),
            },
        )
    }

    fn unknown_key(
        &self,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        section: &str,
        known: &[&str],
    ) -> Box<SpecError> {
        self.error(
            key.span(),
            None,
            SpecErrorKind::UnknownKey {
                field: key.get_ref().to_string(),
                section: section.to_string(),
                known: known.join(", "),
            },
        )
    }

    fn table<'v, 'i>(
        &self,
        value: &'v Spanned<DeValue<'i>>,
        field: &str,
    ) -> Result<&'v DeTable<'i>, Box<SpecError>> {
        value
            .get_ref()
            .as_table()
            .ok_or_else(|| self.wrong_type(value, field, "a table"))
    }

    fn array<'v, 'i>(
        &self,
        value: &'v Spanned<DeValue<'i>>,
        field: &str,
    ) -> Result<&'v [Spanned<DeValue<'i>>], Box<SpecError>> {
        match value.get_ref() {
            DeValue::Array(array) => Ok(array),
            _ => Err(self.wrong_type(value, field, "an array of tables ([[...]])")),
        }
    }

    fn string(
        &self,
        value: &Spanned<DeValue<'_>>,
        field: &str,
    ) -> Result<Sp<String>, Box<SpecError>> {
        match value.get_ref().as_str() {
            Some(text) => Ok(Sp {
                value: text.to_string(),
                span: value.span(),
            }),
            None => Err(self.wrong_type(value, field, "a string")),
        }
    }

    fn attr_value(&self, value: &Spanned<DeValue<'_>>) -> Sp<AttrValue> {
        let converted = match value.get_ref() {
            DeValue::String(text) => AttrValue::Text(text.to_string()),
            DeValue::Integer(integer) => {
                let digits: String = integer.as_str().chars().filter(|c| *c != '_').collect();
                match i128::from_str_radix(digits.trim_start_matches('+'), integer.radix()) {
                    Ok(number) => AttrValue::Integer(number),
                    Err(_) => AttrValue::Other("an out-of-range integer"),
                }
            }
            DeValue::Float(float) => match float.as_str().replace('_', "").parse::<f64>() {
                Ok(number) => AttrValue::Float(number),
                Err(_) => AttrValue::Other("a special float"),
            },
            DeValue::Boolean(flag) => AttrValue::Bool(*flag),
            DeValue::Datetime(_) => AttrValue::Other("a date"),
            DeValue::Array(items) => {
                AttrValue::List(items.iter().map(|item| self.attr_value(item)).collect())
            }
            DeValue::Table(_) => AttrValue::Other("a table"),
        };
        Sp {
            value: converted,
            span: value.span(),
        }
    }

    fn node(&self, item: &Spanned<DeValue<'_>>) -> Result<NodeSpec, Box<SpecError>> {
        let table = self.table(item, "node")?;
        let mut name = None;
        let mut op = None;
        let mut inputs = Vec::new();
        let mut attributes = Vec::new();
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "name" => name = Some(self.string(value, "name")?),
                "op" => op = Some(self.string(value, "op")?),
                "input" => inputs = self.names(value, "input")?,
                _ => attributes.push(Attribute {
                    key: Sp {
                        value: key.get_ref().to_string(),
                        span: key.span(),
                    },
                    value: self.attr_value(value),
                }),
            }
        }
        attributes.sort_by_key(|attribute| attribute.key.span.start);
        let name = name.ok_or_else(|| {
            self.error(
                item.span(),
                None,
                SpecErrorKind::Missing {
                    field: "name".into(),
                    context: " in [[node]]".into(),
                },
            )
        })?;
        let op = op.ok_or_else(|| {
            self.error(
                name.span.clone(),
                Some(&name.value),
                SpecErrorKind::Missing {
                    field: "op".into(),
                    context: String::new(),
                },
            )
        })?;
        Ok(NodeSpec {
            name,
            op,
            inputs,
            attributes,
            span: item.span(),
        })
    }

    fn names(
        &self,
        value: &Spanned<DeValue<'_>>,
        field: &str,
    ) -> Result<Vec<Sp<String>>, Box<SpecError>> {
        match value.get_ref() {
            DeValue::String(_) => Ok(vec![self.string(value, field)?]),
            DeValue::Array(items) => items.iter().map(|item| self.string(item, field)).collect(),
            _ => Err(self.wrong_type(value, field, "a string or an array of strings")),
        }
    }

    fn block(&self, item: &Spanned<DeValue<'_>>) -> Result<BlockSpec, Box<SpecError>> {
        let table = self.table(item, "block")?;
        let mut name = None;
        let mut repeat = None;
        let mut input = None;
        let mut output = None;
        let mut nodes = Vec::new();
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "name" => name = Some(self.string(value, "name")?),
                "repeat" => repeat = Some(self.attr_value(value)),
                "input" => input = Some(self.string(value, "input")?),
                "output" => output = Some(self.string(value, "output")?),
                "doc" => {
                    self.string(value, "doc")?;
                }
                "node" => {
                    for node in self.array(value, "node")? {
                        nodes.push(self.node(node)?);
                    }
                }
                _ => return Err(self.unknown_key(key, "[[block]]", BLOCK_KEYS)),
            }
        }
        let missing = |field: &str, span: Range<usize>, node: Option<&str>| {
            self.error(
                span,
                node,
                SpecErrorKind::Missing {
                    field: field.to_string(),
                    context: " in [[block]]".into(),
                },
            )
        };
        let name = name.ok_or_else(|| missing("name", item.span(), None))?;
        let repeat =
            repeat.ok_or_else(|| missing("repeat", name.span.clone(), Some(&name.value)))?;
        let input = input.ok_or_else(|| missing("input", name.span.clone(), Some(&name.value)))?;
        let output =
            output.ok_or_else(|| missing("output", name.span.clone(), Some(&name.value)))?;
        nodes.sort_by_key(|node| node.span.start);
        Ok(BlockSpec {
            name,
            repeat,
            input,
            output,
            nodes,
            span: item.span(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_spans_of_nodes_and_attributes() {
        let text = "[dims]\nd = 4\n\n[[node]]\nname = \"x\"\nop = \"input\"\nshape = [\"d\", 2]\n";
        let spec = Spec::parse("t.toml", text).unwrap();
        assert_eq!(spec.dims.len(), 1);
        let node = &spec.nodes[0];
        assert_eq!(node.name.value, "x");
        let shape = node.attribute("shape").unwrap();
        let location = Location::from_span("t.toml", text, shape.key.span.clone());
        assert_eq!((location.line, location.column), (7, 1));
        match &shape.value.value {
            AttrValue::List(items) => assert_eq!(items[1].value, AttrValue::Integer(2)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let error = Spec::parse("bad.toml", "[dims]\nd = \n").unwrap_err();
        assert_eq!(error.location.line, 2);
        assert!(matches!(error.kind, SpecErrorKind::Syntax { .. }));
        let error = Spec::parse("bad.toml", "[dims]\nd = 1\n[extra]\n").unwrap_err();
        assert_eq!(error.location.line, 3);
        assert!(matches!(error.kind, SpecErrorKind::UnknownKey { .. }));
    }
}
