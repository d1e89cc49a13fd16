//! `attnflow verify`: checks each claim of the paper on the engines
//! attnflow ships (`attnflow_claims`) and prints the verdicts, each with
//! the rule that decided it and the numbers it was decided from.

use attnflow_claims::{check_claims, tally, ClaimOptions, ClaimStatus};
use clap::Args;
use miette::miette;

use crate::error::{CliError, CliResult};

/// Arguments of `attnflow verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Print the verdicts as JSON.
    #[arg(long)]
    json: bool,
    /// Seed of the random trials.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Random trials per statistical check.
    #[arg(long, default_value_t = 200)]
    trials: usize,
    /// Skip timing attention (§9 is then decided from counted FLOPs; the
    /// timing is the only evidence that depends on the machine).
    #[arg(long)]
    no_timing: bool,
}

/// Runs `attnflow verify`. Exits 1 when a check is inconclusive: the
/// shipped engines disagree with exact arithmetic or with a definition.
pub fn run(args: VerifyArgs) -> CliResult {
    let mut options = ClaimOptions {
        seed: args.seed,
        trials: args.trials.max(1),
        ..ClaimOptions::default()
    };
    if args.no_timing {
        options.timing_lengths.clear();
    }
    let checks = check_claims(&options);
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "seed": args.seed, "claims": checks })
        );
    } else {
        println!("{:<11} {:<6} {:<26} claim", "id", "§", "status");
        for check in &checks {
            println!(
                "{:<11} {:<6} {:<26} {}",
                check.id,
                check.section,
                check.status.label(),
                check.statement
            );
            println!("{:>45} rule:     {}", "", check.rule);
            println!("{:>45} finding:  {}", "", check.finding);
            println!("{:>45} evidence: {}", "", check.evidence);
        }
        let counts: Vec<String> = tally(&checks)
            .into_iter()
            .map(|(status, count)| format!("{} {count}", status.label()))
            .collect();
        println!("\n{} claims: {}", checks.len(), counts.join(", "));
    }
    let open: Vec<&str> = checks
        .iter()
        .filter(|check| check.status == ClaimStatus::Inconclusive)
        .map(|check| check.id)
        .collect();
    if open.is_empty() {
        Ok(())
    } else {
        Err(CliError::failed(miette!(
            "inconclusive: {} (the evidence contradicts attnflow's own finding)",
            open.join(", ")
        )))
    }
}
