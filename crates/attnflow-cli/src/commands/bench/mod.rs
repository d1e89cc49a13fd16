//! `attnflow bench ...`: attnflow and a named peer on the same work, side by
//! side (attnflow-bench).

mod attention;
mod data;
mod embed;
mod generate;
mod train;
mod workflow;

use clap::Subcommand;

use crate::error::CliResult;

/// Subcommands of `attnflow bench`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Check a generated 6-column CSV with attnflow and with pandas +
    /// pandera (when installed), and print rows/s for both and the ratio.
    Data(data::BenchDataArgs),
    /// Time attnflow's fused attention kernel, its exact path and PyTorch's
    /// scaled_dot_product_attention (when installed), forward and
    /// forward+backward, and print GFLOP/s, ratios and peak memory.
    Attention(attention::BenchAttentionArgs),
    /// Embed the same generated texts with attnflow and (when importable)
    /// sentence-transformers, and print texts/s for both, the ratio and how
    /// closely the embeddings agree.
    Embed(embed::BenchEmbedArgs),
    /// Train the same small transformer for the same steps in attnflow and
    /// (when importable) PyTorch, and print tokens/s for both and the ratio.
    Train(train::BenchTrainArgs),
    /// A decoder in attnflow and (when importable) transformers, rounds
    /// interleaved: prefill with every attention map kept, greedy decode.
    Generate(generate::BenchGenerateArgs),
    /// Durable workflow transitions per second and claim latency for 1, 4
    /// and 16 workers on a store, beside `pgbench -N` on PostgreSQL.
    Workflow(workflow::BenchWorkflowArgs),
}

impl BenchCommand {
    /// Whether the command trains (the binary then keeps candle's
    /// element-wise ops off a second thread pool before any thread starts).
    pub fn trains(&self) -> bool {
        matches!(self, BenchCommand::Train(_))
    }
}

/// `--rounds`: a count of at least 1.
fn rounds(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(count) if count >= 1 => Ok(count),
        _ => Err(format!("`{text}` is not a count of rounds (1 or more)")),
    }
}

/// Runs a `bench` subcommand.
pub fn run(command: BenchCommand) -> CliResult {
    match command {
        BenchCommand::Data(args) => data::run(args),
        BenchCommand::Attention(args) => attention::run(args),
        BenchCommand::Embed(args) => embed::run(args),
        BenchCommand::Train(args) => train::run(args),
        BenchCommand::Workflow(args) => workflow::run(args),
        BenchCommand::Generate(args) => generate::run(args),
    }
}
