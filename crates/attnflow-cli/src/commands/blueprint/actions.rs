//! What `attnflow blueprint cost|scale|diagram` do with their arguments,
//! and how every blueprint subcommand reads its spec.

use std::path::Path;

use attnflow_blueprint::diagram::{self, DiagramOptions};
use attnflow_blueprint::render;
use attnflow_blueprint::{account, parse_override, scale, Blueprint, Error, Spec, SpecError};
use miette::miette;

use super::{CostArgs, DiagramArgs, FormatArg, ScaleArgs, SpecArgs};
use crate::error::{CliError, CliResult};
use crate::output::print_json;

/// `attnflow blueprint cost`: the account and, for decoders, what serving
/// them costs (prefill and decode FLOPs per token, the KV cache, memory at
/// a context length).
pub(super) fn cost_command(args: &CostArgs) -> CliResult {
    let blueprint = load(&args.spec)?;
    let options = args.count.options();
    let account = account(&blueprint, options);
    let inference = attnflow_blueprint::is_decoder(&blueprint)
        .then(|| attnflow_blueprint::inference(&blueprint, options, args.context));
    if args.output.json {
        let mut value = serde_json::to_value(&account)
            .map_err(|error| CliError::failed(miette!("cannot encode JSON: {error}")))?;
        if let Some(inference) = &inference {
            value["inference"] = serde_json::to_value(inference)
                .map_err(|error| CliError::failed(miette!("cannot encode JSON: {error}")))?;
        }
        return print_json(&value);
    }
    let style = args.output.style();
    print!("{}", render::account_table(&account, args.expand, style));
    if let Some(inference) = &inference {
        print!("\n{}", render::inference_table(inference, style));
    }
    Ok(())
}

pub(super) fn scale_command(args: &ScaleArgs) -> CliResult {
    let (spec, text) = read_spec(&args.spec.spec)?;
    let overrides = overrides(&args.spec.set)?;
    let options = args.count.options();
    let report = scale(&spec, &args.dim, &args.values, &overrides, options, |_| {})
        .map_err(|error| blueprint_error(error, &spec.file, &text))?;
    if args.output.json {
        return print_json(&report);
    }
    print!("{}", render::scale_table(&report, args.output.style()));
    Ok(())
}

pub(super) fn diagram_command(args: &DiagramArgs) -> CliResult {
    let blueprint = load(&args.spec)?;
    let options = DiagramOptions {
        expand: args.expand,
        shapes: args.shapes,
        cost: args.cost.then(|| args.count.options()),
    };
    let drawing = match &args.node {
        Some(name) => diagram::attention_drawing(&blueprint, name)
            .map_err(|error| CliError::bad_input(miette!("{error}")))?,
        None => diagram::drawing(&blueprint, options),
    };
    let text = match args.format {
        FormatArg::Mermaid => diagram::mermaid(&drawing),
        FormatArg::Dot => diagram::dot(&drawing),
        FormatArg::Svg => diagram::svg(&drawing),
    };
    match &args.output {
        Some(path) => {
            attnflow_base::write_atomically(path, text.as_bytes()).map_err(|error| {
                CliError::failed(miette!("cannot write {}: {error}", path.display()))
            })?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

fn read_spec(path: &Path) -> Result<(Spec, String), CliError> {
    // A Hugging Face model directory or a GGUF file: its spec is derived
    // from config.json or the GGUF metadata.
    let (file, text) = if path.is_dir() || attnflow_models::gguf::is_gguf(path) {
        attnflow_models::blueprint_spec_of_model(path)?
    } else {
        let text = std::fs::read_to_string(path).map_err(|error| {
            CliError::bad_input(miette!("cannot read {}: {error}", path.display()))
        })?;
        (path.display().to_string(), text)
    };
    let spec = Spec::parse(&file, &text)
        .map_err(|error| CliError::bad_input(spec_report(*error, &file, &text)))?;
    Ok((spec, text))
}

fn overrides(set: &[String]) -> Result<Vec<(String, String)>, CliError> {
    set.iter()
        .map(|text| parse_override(text).map_err(|error| CliError::bad_input(miette!("{error}"))))
        .collect()
}

pub(super) fn load(args: &SpecArgs) -> Result<Blueprint, CliError> {
    let (spec, text) = read_spec(&args.spec)?;
    let overrides = overrides(&args.set)?;
    spec.check(&overrides)
        .map_err(|error| blueprint_error(error, &spec.file, &text))
}

fn blueprint_error(error: Error, file: &str, text: &str) -> CliError {
    match error {
        Error::Spec(error) => CliError::bad_input(spec_report(*error, file, text)),
        Error::Io { .. } | Error::Request(_) => CliError::bad_input(miette!("{error}")),
    }
}

/// A spec fault as a diagnostic: the message names file:line:col and the
/// node, and the snippet underlines the offending text.
fn spec_report(error: SpecError, file: &str, text: &str) -> miette::Report {
    let label = match &error.node {
        Some(node) => format!("in node `{node}`"),
        None => "here".to_string(),
    };
    let span = error.location.span.clone();
    crate::error::spanned(file, text, span, &label, &error.to_string())
}
