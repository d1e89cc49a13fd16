//! The `attnflow` binary. Each subcommand group lives in
//! `commands/<group>.rs`: it parses flags, calls one library function and
//! prints. Exit codes: 0 success, 1 the work failed, 2 bad input or usage.

mod commands;
mod error;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Design, train and inspect attention-based neural networks.
#[derive(Debug, Parser)]
#[command(
    name = "attnflow",
    version,
    about = "Design, train and inspect attention-based neural networks: see what an architecture costs before you train it, train it on your own data, and look inside its attention and inside pretrained models.",
    after_help = "Start with `attnflow run`: it checks a dataset, trains a small transformer, validates it and writes one report.html, in seconds.\nExit codes: 0 success, 1 the work failed, 2 bad input or usage."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The main job: ingest and check data, train, validate, report (figure 3).
    /// With no spec, runs an embedded default in a few seconds.
    Run(commands::run::RunArgs),
    /// Check, cost, scale and draw architecture blueprints (§3.1, §4.1, §9).
    #[command(subcommand)]
    Blueprint(commands::blueprint::BlueprintCommand),
    /// Run the attention engine on your own tensors.
    #[command(subcommand)]
    Attention(commands::attention::AttentionCommand),
    /// Sentence embeddings of a text file with a pretrained BERT-family model.
    Embed(commands::embed::EmbedArgs),
    /// Continue a prompt with a decoder (Hugging Face directory or GGUF file).
    Generate(commands::generate::GenerateArgs),
    /// Perplexity of a text file under a decoder, with a sliding window.
    #[command(name = "eval-lm")]
    EvalLm(commands::eval_lm::EvalLmArgs),
    /// Run durable workflows and analyse their history as a Markov chain (§5).
    #[command(subcommand)]
    Workflow(commands::workflow::WorkflowCommand),
    /// Check each claim of the paper numerically: verdicts with evidence.
    Verify(commands::verify::VerifyArgs),
    /// Claim and run workflow steps from a shared store's queues.
    Worker(commands::worker::WorkerArgs),
    /// Migrate a store, or copy its history between SQLite and PostgreSQL.
    #[command(subcommand)]
    Store(commands::store::StoreCommand),
    /// Check data with quarantine, profile it, select items under a budget (§6).
    #[command(subcommand)]
    Data(commands::data::DataCommand),
    /// Benchmarks against named peers, run side by side.
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
    /// Train a blueprint on a task: J = L + λR, gradient flow, checkpoints (§2.3, §7.1).
    Train(commands::train::TrainArgs),
    /// Score a training checkpoint on its task's validation set.
    Eval(commands::train::EvalArgs),
    /// A local web app over runs, training curves, the quarantine and workflow history.
    Ui(commands::ui::UiArgs),
}

fn main() -> ExitCode {
    // `attnflow ... | head` must end quietly, as other Unix tools do, not
    // panic in println! when the pipe closes.
    #[cfg(unix)]
    // SAFETY: restores the default action of one signal before any thread
    // starts; no Rust state depends on SIGPIPE being ignored.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Tensor buffers freed by one step are reused by the next instead of
    // being unmapped and faulted in again (see attnflow_core::process).
    attnflow_core::process::keep_freed_memory();
    // Whole lines keep messages greppable and file paths unbroken.
    let _ = miette::set_hook(Box::new(|_| {
        Box::new(miette::MietteHandlerOpts::new().wrap_lines(false).build())
    }));
    let cli = Cli::parse();
    if let Err(error) = panel_memory_from_environment() {
        return error.report_and_exit_code();
    }
    // Commands that train keep candle's element-wise ops off a second
    // spinning thread pool; set here, while this is the only thread, since
    // it writes the environment (Trainer::new repeats it for library use).
    let trains = match &cli.command {
        Command::Run(_) | Command::Train(_) | Command::Eval(_) => true,
        Command::Bench(bench) => bench.trains(),
        _ => false,
    };
    if trains {
        attnflow_core::process::one_worker_pool();
    }
    let result = match cli.command {
        Command::Run(args) => commands::run::run(args),
        Command::Blueprint(command) => commands::blueprint::run(command),
        Command::Attention(command) => commands::attention::run(command),
        Command::Embed(args) => commands::embed::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::EvalLm(args) => commands::eval_lm::run(args),
        Command::Workflow(command) => commands::workflow::run(command),
        Command::Verify(args) => commands::verify::run(args),
        Command::Worker(args) => commands::worker::run(args),
        Command::Store(command) => commands::store::run(command),
        Command::Data(command) => commands::data::run(command),
        Command::Bench(command) => commands::bench::run(command),
        Command::Train(args) => commands::train::train(args),
        Command::Eval(args) => commands::train::eval(args),
        Command::Ui(args) => commands::ui::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => error.report_and_exit_code(),
    }
}

/// The variable that bounds the memory decoder weights keep as `f32`
/// panels between prefills.
const PANEL_MEMORY: &str = "ATTNFLOW_PANEL_MEMORY_MIB";

/// Applies `ATTNFLOW_PANEL_MEMORY_MIB` (MiB of kept panels, all matrices
/// together; 0 keeps none; 1024 when unset).
fn panel_memory_from_environment() -> Result<(), error::CliError> {
    let Some(value) = std::env::var_os(PANEL_MEMORY) else {
        return Ok(());
    };
    let text = value.to_string_lossy();
    let mebibytes: usize = text.trim().parse().map_err(|_| {
        error::CliError::bad_input(miette::miette!(
            "{PANEL_MEMORY}: expected a whole number of MiB (0 keeps no panels), got `{text}`"
        ))
    })?;
    attnflow_models::decoder::set_kept_panel_limit(mebibytes.saturating_mul(1 << 20));
    Ok(())
}
