//! `attnflow blueprint ...`: check an architecture spec, show its
//! `M = (I, O, F, R)`, account its arithmetic, scale it over one dimension
//! and draw it. The logic lives in `attnflow-blueprint`; this module parses
//! arguments and prints.

use std::path::PathBuf;

use attnflow_blueprint::render::{self, Style};
use attnflow_blueprint::{summary, Convention, CostOptions, Counting, Dtype};
use clap::{Args, Subcommand, ValueEnum};

use crate::error::CliResult;
use crate::output::print_json;

mod actions;

use actions::{cost_command, diagram_command, load, scale_command};

/// Subcommands of `attnflow blueprint`.
#[derive(Debug, Subcommand)]
pub enum BlueprintCommand {
    /// Check a spec: dims, names, cycles and every shape. Prints a one-line
    /// summary (or, with --json, the checked graph).
    Check(CheckArgs),
    /// Show M = (I, O, F, R): inputs, outputs, the forward graph in
    /// topological order, and the receptive field (§3.1).
    Show(ShowArgs),
    /// Account parameters, FLOPs by kind, MACs, activation memory and
    /// training FLOPs per node and in total (§9).
    Cost(CostArgs),
    /// Cost over a list of values of one dimension and fit the growth
    /// exponent of time and memory (§9).
    Scale(ScaleArgs),
    /// Draw the data-flow graph (§4.1, figure 1) as Mermaid, DOT or SVG.
    Diagram(DiagramArgs),
}

/// The spec and its dimension overrides.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// The blueprint spec (TOML), such as examples/blueprints/gpt2-small.toml,
    /// a Hugging Face model directory (BERT, llama, mistral, qwen2, gpt2: its
    /// config.json is read) or a GGUF file (its metadata is read).
    spec: PathBuf,
    /// Override a dimension: --set seq=2048 (repeatable; the value may be an
    /// expression over other dims).
    #[arg(long = "set", value_name = "DIM=VALUE")]
    set: Vec<String>,
}

/// Counting conventions (see `attnflow-blueprint`'s `Convention`).
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ConventionArg {
    /// Every scalar operation, split by kind.
    Granular,
    /// Matrix products only, 2 FLOPs per MAC (PyTorch FlopCounterMode).
    Matmul,
    /// Kaplan et al. 2020: 2N + 2·n_layer·n_ctx·d_attn per token.
    Kaplan,
}

/// Dense or exact counting of masked attention.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum CountingArg {
    /// Count the whole score matrix, masked entries included.
    Dense,
    /// Count only unmasked entries (causal: n(n+1)/2 per head).
    Exact,
}

/// Activation number types.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum DtypeArg {
    F64,
    F32,
    F16,
    Bf16,
}

/// How to count.
#[derive(Debug, Args)]
pub struct CountArgs {
    /// Which operations count.
    #[arg(long, value_enum, default_value = "granular")]
    convention: ConventionArg,
    /// Dense or exact counting of masked attention entries (kaplan's
    /// formula is dense by definition and ignores this).
    #[arg(long, value_enum, default_value = "dense")]
    counting: CountingArg,
    /// Number type of activations, for memory.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: DtypeArg,
}

impl CountArgs {
    fn options(&self) -> CostOptions {
        CostOptions {
            convention: match self.convention {
                ConventionArg::Granular => Convention::Granular,
                ConventionArg::Matmul => Convention::Matmul,
                ConventionArg::Kaplan => Convention::Kaplan,
            },
            counting: match self.counting {
                CountingArg::Dense => Counting::Dense,
                CountingArg::Exact => Counting::Exact,
            },
            dtype: match self.dtype {
                DtypeArg::F64 => Dtype::F64,
                DtypeArg::F32 => Dtype::F32,
                DtypeArg::F16 => Dtype::F16,
                DtypeArg::Bf16 => Dtype::Bf16,
            },
        }
    }
}

/// Text, Markdown or JSON.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print JSON for machines.
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
    /// Print Markdown tables.
    #[arg(long)]
    markdown: bool,
}

impl OutputArgs {
    fn style(&self) -> Style {
        if self.markdown {
            Style::Markdown
        } else {
            Style::Text
        }
    }
}

/// Arguments of `attnflow blueprint check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Print the checked graph (nodes in topological order with ops,
    /// inputs and shapes) as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `attnflow blueprint show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    spec: SpecArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// Arguments of `attnflow blueprint cost`.
#[derive(Debug, Args)]
pub struct CostArgs {
    #[command(flatten)]
    spec: SpecArgs,
    #[command(flatten)]
    count: CountArgs,
    /// One row per layer of repeated blocks instead of one row per block node.
    #[arg(long)]
    expand: bool,
    /// Decoders: cached positions for the decode FLOPs, KV cache and memory
    /// figures (default: the seq dim).
    #[arg(long)]
    context: Option<u64>,
    #[command(flatten)]
    output: OutputArgs,
}

/// Arguments of `attnflow blueprint scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// The dimension to vary, such as seq.
    #[arg(long)]
    dim: String,
    /// Comma-separated values, such as 128,256,512,1024.
    #[arg(long, value_delimiter = ',', required = true)]
    values: Vec<u64>,
    #[command(flatten)]
    count: CountArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// Diagram formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    /// A Mermaid flowchart (renders on GitHub and in many editors).
    Mermaid,
    /// Graphviz DOT.
    Dot,
    /// A self-contained SVG drawn without Graphviz.
    Svg,
}

/// Arguments of `attnflow blueprint diagram`.
#[derive(Debug, Args)]
pub struct DiagramArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "mermaid")]
    format: FormatArg,
    /// Draw every layer of repeated blocks instead of one box marked ×L.
    #[arg(long)]
    expand: bool,
    /// Draw the inside of this attention node instead (figure 1):
    /// projections, scores, mask, softmax, weighted values, with shapes.
    #[arg(long, value_name = "NODE", conflicts_with_all = ["expand", "shapes", "cost"])]
    node: Option<String>,
    /// Show output shapes on nodes.
    #[arg(long)]
    shapes: bool,
    /// Show parameters and forward FLOPs on nodes.
    #[arg(long)]
    cost: bool,
    #[command(flatten)]
    count: CountArgs,
    /// Write to this file (atomically) instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// Runs one `attnflow blueprint` subcommand.
pub fn run(command: BlueprintCommand) -> CliResult {
    match command {
        BlueprintCommand::Check(args) => {
            let blueprint = load(&args.spec)?;
            if args.json {
                return print_json(&blueprint);
            }
            println!("{}", render::check_line(&blueprint));
            Ok(())
        }
        BlueprintCommand::Show(args) => {
            let summary = summary(&load(&args.spec)?);
            if args.output.json {
                return print_json(&summary);
            }
            print!("{}", render::summary_text(&summary, args.output.style()));
            Ok(())
        }
        BlueprintCommand::Cost(args) => cost_command(&args),
        BlueprintCommand::Scale(args) => scale_command(&args),
        BlueprintCommand::Diagram(args) => diagram_command(&args),
    }
}
