//! `attnflow verify`: checks each claim of the paper numerically
//! (`attnflow_core::claims`) and prints the verdicts.

use attnflow_core::claims::{check_claims, ClaimOptions, ClaimStatus};
use clap::Args;

use crate::error::CliResult;

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
    /// Skip timing attention for the complexity exponent (the only check
    /// whose numbers depend on the machine).
    #[arg(long)]
    no_timing: bool,
}

/// Runs `attnflow verify`.
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
        let items: Vec<serde_json::Value> = checks
            .iter()
            .map(|c| {
                serde_json::json!({
                    "id": c.id,
                    "section": c.section,
                    "claim": c.statement,
                    "status": c.status.label(),
                    "finding": c.finding,
                    "evidence": c.evidence,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "seed": args.seed, "claims": items })
        );
        return Ok(());
    }
    println!("{:<11} {:<6} {:<26} claim", "id", "§", "status");
    for check in &checks {
        println!(
            "{:<11} {:<6} {:<26} {}",
            check.id,
            check.section,
            check.status.label(),
            check.statement
        );
        println!("{:>45} finding:  {}", "", check.finding);
        println!("{:>45} evidence: {}", "", check.evidence);
    }
    let count = |status: ClaimStatus| checks.iter().filter(|c| c.status == status).count();
    println!(
        "\n{} claims: holds {}, false {}, holds under condition {}, definition {}",
        checks.len(),
        count(ClaimStatus::Holds),
        count(ClaimStatus::False),
        count(ClaimStatus::HoldsUnderCondition),
        count(ClaimStatus::Definition)
    );
    Ok(())
}
