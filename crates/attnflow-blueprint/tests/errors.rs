//! Every class of spec fault is reported as a typed error naming the line,
//! column and node — never a panic.

use attnflow_blueprint::{Blueprint, Error, SpecErrorKind};

/// A small valid spec; each case replaces one line of it.
const BASE: &str = r#"[dims]
batch = 2
seq = 8
d_model = 32
heads = 4
d_ff = "4 * d_model"

[[node]]
name = "x"
op = "input"
shape = ["batch", "seq", "d_model"]

[[node]]
name = "attn"
op = "attention"
input = "x"
heads = "heads"

[[node]]
name = "residual"
op = "add"
input = ["x", "attn"]

[[node]]
name = "ffn"
op = "feed_forward"
input = "residual"
hidden = "d_ff"
"#;

fn check(text: &str) -> attnflow_blueprint::Result<Blueprint> {
    Blueprint::from_text("case.toml", text, &[])
}

/// Replaces the first occurrence of `from` (which must exist) and returns
/// the error the spec then produces.
fn fault(from: &str, to: &str) -> attnflow_blueprint::SpecError {
    assert!(BASE.contains(from), "{from}");
    let text = BASE.replacen(from, to, 1);
    match check(&text) {
        Ok(_) => panic!("expected an error after replacing {from:?} with {to:?}"),
        Err(Error::Spec(error)) => *error,
        Err(other) => panic!("expected a spec error, got {other}"),
    }
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|line| line.contains(needle))
        .expect("needle present")
        + 1
}

#[test]
fn the_base_spec_is_valid() {
    let blueprint = check(BASE).unwrap();
    assert_eq!(blueprint.node("ffn").unwrap().shape, vec![2, 8, 32]);
}

#[test]
fn unknown_op() {
    let error = fault("op = \"feed_forward\"", "op = \"feedforward\"");
    assert!(
        matches!(&error.kind, SpecErrorKind::UnknownOp { op, .. } if op.contains("did you mean `feed_forward`"))
    );
    assert_eq!(error.location.line, line_of(BASE, "op = \"feed_forward\""));
    assert_eq!(error.location.column, 6);
    assert_eq!(error.node.as_deref(), Some("ffn"));
    let expected = format!(
        "case.toml:{}:6: node `ffn`: unknown op `feedforward (did you mean `feed_forward`?)`",
        line_of(BASE, "op = \"feed_forward\"")
    );
    assert!(error.to_string().starts_with(&expected), "{error}");
}

#[test]
fn unknown_attribute() {
    let error = fault("heads = \"heads\"", "head = \"heads\"");
    assert!(
        matches!(&error.kind, SpecErrorKind::UnknownAttribute { attribute, op, .. } if attribute.starts_with("head") && op == "attention")
    );
    assert_eq!(error.location.line, line_of(BASE, "heads = \"heads\""));
    assert_eq!(error.node.as_deref(), Some("attn"));
}

#[test]
fn unknown_input() {
    let error = fault("input = \"residual\"", "input = \"residul\"");
    assert!(
        matches!(&error.kind, SpecErrorKind::UnknownInput { input, hint } if input == "residul" && hint.contains("residual"))
    );
    assert_eq!(error.location.line, line_of(BASE, "input = \"residual\""));
    assert_eq!(error.node.as_deref(), Some("ffn"));
}

#[test]
fn cycle() {
    let error = fault("input = \"x\"\nheads", "input = \"ffn\"\nheads");
    match &error.kind {
        SpecErrorKind::Cycle { path } => {
            assert_eq!(path.first(), path.last());
            assert!(path.contains(&"attn".to_string()) && path.contains(&"ffn".to_string()));
        }
        other => panic!("{other:?}"),
    }
    assert!(error.node.is_some());
    assert!(error.location.line > 1);
}

#[test]
fn unknown_dimension() {
    let error = fault("d_ff = \"4 * d_model\"", "d_ff = \"4 * d_modle\"");
    assert!(
        matches!(&error.kind, SpecErrorKind::UnknownDimension { name, hint, .. } if name == "d_modle" && hint.contains("d_model"))
    );
    assert_eq!(error.location.line, 6);
    let error = fault("hidden = \"d_ff\"", "hidden = \"width\"");
    assert!(matches!(&error.kind, SpecErrorKind::UnknownDimension { name, .. } if name == "width"));
    assert_eq!(error.location.line, line_of(BASE, "hidden = \"d_ff\""));
    assert_eq!(error.node.as_deref(), Some("ffn"));
}

#[test]
fn non_integer() {
    let error = fault("d_ff = \"4 * d_model\"", "d_ff = 3.5");
    assert!(matches!(error.kind, SpecErrorKind::NonInteger { .. }));
    assert_eq!(error.location.line, 6);
    let error = fault("d_ff = \"4 * d_model\"", "d_ff = \"2.5 * d_model\"");
    assert!(matches!(error.kind, SpecErrorKind::NonInteger { .. }));
    let error = fault("d_ff = \"4 * d_model\"", "d_ff = \"d_model - 32\"");
    assert!(
        matches!(&error.kind, SpecErrorKind::NonInteger { message, .. } if message.contains("positive"))
    );
}

#[test]
fn not_divisible() {
    let error = fault("d_ff = \"4 * d_model\"", "d_ff = \"d_model / 5\"");
    assert!(matches!(
        error.kind,
        SpecErrorKind::NotDivisible {
            numerator: 32,
            denominator: 5,
            ..
        }
    ));
    assert_eq!(error.location.line, 6);
    // The implied split: 32 features cannot make 5 heads.
    let error = fault("heads = 4", "heads = 5");
    assert!(matches!(
        error.kind,
        SpecErrorKind::NotDivisible {
            numerator: 32,
            denominator: 5,
            ..
        }
    ));
    assert_eq!(error.location.line, line_of(BASE, "heads = \"heads\""));
    assert_eq!(error.node.as_deref(), Some("attn"));
}

#[test]
fn shape_mismatch_at_add() {
    let error = fault("heads = \"heads\"", "heads = \"heads\"\nout = 16");
    assert!(
        matches!(&error.kind, SpecErrorKind::ShapeMismatch { op, message } if op == "add" && message.contains("[2, 8, 16]") && message.contains("[2, 8, 32]"))
    );
    let text = BASE.replacen("heads = \"heads\"", "heads = \"heads\"\nout = 16", 1);
    // The span is the offending input's name.
    assert_eq!(
        error.location.line,
        line_of(&text, "input = [\"x\", \"attn\"]")
    );
    assert_eq!(error.location.column, 15);
    assert_eq!(error.node.as_deref(), Some("residual"));
}

#[test]
fn shape_mismatch_at_matmul() {
    let text =
        format!("{BASE}\n[[node]]\nname = \"scores\"\nop = \"matmul\"\ninput = [\"x\", \"ffn\"]\n");
    let error = match check(&text) {
        Err(Error::Spec(error)) => error,
        other => panic!("{other:?}"),
    };
    assert!(matches!(&error.kind, SpecErrorKind::ShapeMismatch { op, .. } if op == "matmul"));
    assert_eq!(error.location.line, line_of(&text, "op = \"matmul\""));
    assert_eq!(error.node.as_deref(), Some("scores"));
    // Transposed, [2, 8, 32] × [2, 8, 32]ᵀ is fine: the attention scores.
    let fixed = text.replace(
        "input = [\"x\", \"ffn\"]",
        "input = [\"x\", \"ffn\"]\ntranspose_b = true",
    );
    assert_eq!(
        check(&fixed).unwrap().node("scores").unwrap().shape,
        vec![2, 8, 8]
    );
}

#[test]
fn other_faults_name_their_line() {
    let cases = [
        ("batch = 2", "batch = ", "invalid TOML"),
        ("name = \"ffn\"", "name = \"attn\"", "duplicate name"),
        ("d_ff = \"4 * d_model\"", "d_ff = \"4 * d_ff\"", "loop"),
        (
            "heads = \"heads\"",
            "heads = \"heads\"\nmask = \"diagonal\"",
            "not one of",
        ),
        (
            "hidden = \"d_ff\"",
            "hidden = \"d_ff\"\nactivation = \"swoosh\"",
            "not one of",
        ),
        (
            "input = \"residual\"",
            "input = [\"residual\", \"x\"]",
            "takes one input",
        ),
        (
            "op = \"input\"",
            "op = \"input\"\ndtype = \"index\"",
            "holds indices",
        ),
        (
            "input = \"x\"\nheads",
            "input = \"x\"\nkv_heads = 3\nheads",
            "not divisible",
        ),
    ];
    for (from, to, expected) in cases {
        let error = fault(from, to);
        let message = error.to_string();
        assert!(
            message.contains(expected),
            "{message} should contain {expected}"
        );
        assert!(message.starts_with("case.toml:"), "{message}");
        assert!(error.location.line >= 1);
    }
}

#[test]
fn ties_must_share_equal_shapes() {
    let text = r#"[dims]
vocab = 10
d = 4

[[node]]
name = "tokens"
op = "input"
shape = [2, 3]
dtype = "index"

[[node]]
name = "embed"
op = "embedding"
input = "tokens"
vocab = "vocab"
dim = "d"

[[node]]
name = "head"
op = "head"
input = "embed"
out = 11
tie = "embed"
"#;
    let error = match check(text) {
        Err(Error::Spec(error)) => error,
        other => panic!("{other:?}"),
    };
    assert!(matches!(&error.kind, SpecErrorKind::ShapeMismatch { op, .. } if op == "tie"));
    assert_eq!(error.location.line, 23);
    let fixed = text.replace("out = 11", "out = \"vocab\"");
    let blueprint = check(&fixed).unwrap();
    let cost = attnflow_blueprint::account(&blueprint, Default::default());
    // The head's weight is the embedding's; only its bias is its own.
    assert_eq!(cost.total.params, 10 * 4 + 10);
    let unknown = text
        .replace("tie = \"embed\"", "tie = \"nothing\"")
        .replace("out = 11", "out = 10");
    assert!(check(&unknown)
        .unwrap_err()
        .to_string()
        .contains("unknown input `nothing`"));
}

#[test]
fn overrides_are_checked() {
    let spec = attnflow_blueprint::Spec::parse("case.toml", BASE).unwrap();
    assert!(spec.check(&[("seq".into(), "16".into())]).is_ok());
    let unknown = spec.check(&[("sequence".into(), "16".into())]).unwrap_err();
    assert!(unknown
        .to_string()
        .contains("`sequence` is not a dimension"));
    let garbage = spec.check(&[("seq".into(), "16x".into())]).unwrap_err();
    assert!(garbage.to_string().contains("16x"));
    // An override that breaks a split is reported at the line that splits.
    let split = spec.check(&[("heads".into(), "6".into())]).unwrap_err();
    assert!(matches!(
        split.spec().map(|error| &error.kind),
        Some(SpecErrorKind::NotDivisible { .. })
    ));
}

#[test]
fn block_faults() {
    let block = |output: &str, extra: &str| {
        format!(
            "{BASE}\n[[block]]\nname = \"b\"\nrepeat = 2\ninput = \"ffn\"\noutput = \"{output}\"\n{extra}\n[[block.node]]\nname = \"y\"\nop = \"layer_norm\"\ninput = \"in\"\n"
        )
    };
    let good = check(&block("y", "")).unwrap();
    assert_eq!(
        good.node("b.1.y").unwrap().inputs,
        vec!["b.0.y".to_string()]
    );
    assert_eq!(good.node("b.0.y").unwrap().inputs, vec!["ffn".to_string()]);
    let text = block("zz", "");
    let error = check(&text).unwrap_err();
    assert!(error.to_string().contains("unknown input `zz`"), "{error}");
    assert_eq!(
        error.spec().unwrap().location.line,
        line_of(&text, "output = \"zz\"")
    );
    let text = block("y", "layers = 3");
    let error = check(&text).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("unknown key `layers` in [[block]]"),
        "{error}"
    );
    assert_eq!(
        error.spec().unwrap().location.line,
        line_of(&text, "layers = 3")
    );
    let text = block("y", "").replace("repeat = 2", "repeat = \"depth\"");
    let error = check(&text).unwrap_err();
    assert!(
        error.to_string().contains("unknown dimension `depth`"),
        "{error}"
    );
}

#[test]
fn huge_sizes_are_refused_not_overflowed() {
    let spec = attnflow_blueprint::Spec::parse("case.toml", BASE).unwrap();
    for (dim, value) in [
        ("seq", "1000000000000000000"),
        ("seq", "100000000"),
        ("d_model", "4 * 1000000000000"),
    ] {
        let error = spec.check(&[(dim.into(), value.into())]).unwrap_err();
        assert!(
            matches!(
                error.spec().map(|error| &error.kind),
                Some(SpecErrorKind::Overflow { .. })
            ),
            "{dim}={value}: {error}"
        );
    }
    // A large but real model is fine: one million tokens.
    let blueprint = spec.check(&[("seq".into(), "1000000".into())]).unwrap();
    let cost = attnflow_blueprint::account(&blueprint, Default::default());
    assert!(cost.total.forward_flops > 0);
}

#[test]
fn a_spec_without_nodes_is_refused() {
    for text in ["", "[dims]\nseq = 4\n"] {
        let error = check(text).unwrap_err();
        assert!(error.to_string().contains("at least one node"), "{error}");
        assert_eq!(error.spec().unwrap().location.line, 1);
    }
}
