//! How commands print: JSON for machines, progress for people. Tables come
//! from `attnflow_base::table`; each library renders its own reports.

use indicatif::{ProgressBar, ProgressStyle};
use miette::miette;

use crate::error::{CliError, CliResult};

/// Prints `value` as pretty JSON on standard output.
pub fn print_json(value: &impl serde::Serialize) -> CliResult {
    let text = serde_json::to_string_pretty(value)
        .map_err(|error| CliError::failed(miette!("cannot encode JSON: {error}")))?;
    println!("{text}");
    Ok(())
}

/// A progress bar on standard error with `template`, hidden when `quiet`
/// (for `--json`, whose output must stay machine-readable).
pub fn progress_bar(length: u64, template: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(length);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A spinner with a message, ticking until it is cleared; hidden when
/// `quiet`.
pub fn spinner(message: String, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(message);
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    spinner
}
