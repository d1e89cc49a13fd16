//! Prints the blueprint spec attnflow derives from a model (a Hugging Face
//! directory or a GGUF file), as `attnflow blueprint` reads it:
//!
//!     cargo run -p attnflow-models --example derived_blueprint -- MODEL
//!
//! `examples/blueprints/SmolLM2-135M.toml` was made this way.

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: derived_blueprint MODEL (a Hugging Face directory or a GGUF file)");
        std::process::exit(2);
    };
    match attnflow_models::blueprint_spec_of_model(std::path::Path::new(&path)) {
        Ok((_, text)) => print!("{text}"),
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(2);
        }
    }
}
