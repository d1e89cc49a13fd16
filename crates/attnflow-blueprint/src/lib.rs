//! Architecture blueprints: a model declared in a TOML spec becomes a checked
//! data-flow graph (§4.1 `G = (V, E)`) whose shapes are inferred and whose
//! arithmetic — parameters, FLOPs by kind, MACs, activation memory — is
//! accounted node by node (§9), with the model's `M = (I, O, F, R)` summary
//! (§3.1), scaling fits and diagrams (figure 1).
//!
//! ```
//! use attnflow_blueprint::{account, Blueprint, CostOptions};
//!
//! let text = r#"
//! [dims]
//! batch = 1
//! seq = 8
//! d = 16
//!
//! [[node]]
//! name = "x"
//! op = "input"
//! shape = ["batch", "seq", "d"]
//!
//! [[node]]
//! name = "attn"
//! op = "attention"
//! input = "x"
//! heads = 2
//! "#;
//! let blueprint = Blueprint::from_text("demo.toml", text, &[]).unwrap();
//! let cost = account(&blueprint, CostOptions::default());
//! assert_eq!(cost.total.params, 4 * (16 * 16 + 16));
//! ```

#![warn(missing_docs)]

pub mod cost;
pub mod diagram;
pub mod error;
pub mod expr;
pub mod graph;
pub mod inference;
pub mod ops;
pub mod receptive;
pub mod render;
pub mod scale;
pub mod spec;

pub use cost::{account, Account, Convention, Cost, CostOptions, Counting, Dtype, Flops, NodeCost};
pub use error::{Error, Location, Result, SpecError, SpecErrorKind};
pub use graph::{parse_override, Block, BlockPosition, Blueprint, Node};
pub use inference::{inference, is_decoder, Inference};
pub use ops::{Element, Op};
pub use receptive::{summary, Extent, Reach, Summary};
pub use scale::{scale, Fit, ScalePoint, ScaleReport};
pub use spec::Spec;
