//! Snapshots (insta) of the human-readable outputs on the tiny example:
//! the cost table, M = (I, O, F, R), and the Mermaid and DOT diagrams.
//! Review changes with `cargo insta review`.

use std::path::PathBuf;

use attnflow_blueprint::diagram::{self, DiagramOptions};
use attnflow_blueprint::render::{self, Style};
use attnflow_blueprint::{account, summary, Blueprint, CostOptions};

fn tiny() -> Blueprint {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/blueprints/tiny.toml");
    let mut blueprint = Blueprint::from_file(&path, &[]).unwrap();
    // The file name as a user would type it, independent of the checkout path.
    blueprint.file = "examples/blueprints/tiny.toml".into();
    blueprint
}

#[test]
fn cost_table() {
    let account = account(&tiny(), CostOptions::default());
    insta::assert_snapshot!(
        "cost_table",
        render::account_table(&account, false, Style::Text)
    );
    insta::assert_snapshot!(
        "cost_markdown",
        render::account_table(&account, false, Style::Markdown)
    );
}

#[test]
fn summary_text() {
    insta::assert_snapshot!(
        "summary",
        render::summary_text(&summary(&tiny()), Style::Text)
    );
}

#[test]
fn mermaid() {
    let options = DiagramOptions {
        shapes: true,
        ..DiagramOptions::default()
    };
    insta::assert_snapshot!(
        "mermaid",
        diagram::mermaid(&diagram::drawing(&tiny(), options))
    );
}

#[test]
fn dot() {
    let options = DiagramOptions {
        shapes: true,
        cost: Some(CostOptions::default()),
        ..DiagramOptions::default()
    };
    insta::assert_snapshot!("dot", diagram::dot(&diagram::drawing(&tiny(), options)));
}

#[test]
fn figure_one() {
    let drawing = diagram::attention_drawing(&tiny(), "block.1.attn").unwrap();
    insta::assert_snapshot!("figure_one_mermaid", diagram::mermaid(&drawing));
}
