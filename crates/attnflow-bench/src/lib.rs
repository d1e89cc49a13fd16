//! Everything behind `attnflow bench`: attnflow and a named peer doing the
//! same work on the same machine, side by side.
//!
//! | module | attnflow | peer (script in `peers/`) |
//! |---|---|---|
//! | [`attention`] | the fused kernel and the exact path | PyTorch's `scaled_dot_product_attention` |
//! | [`train`] | training a small decoder | the same model in PyTorch |
//! | [`embed`] | sentence embeddings with a BERT-family model | sentence-transformers |
//! | [`generate`] | a decoder's prefill with every attention map kept, and greedy decode | transformers (float32) |
//! | [`data`] | the quality check with quarantine | pandas + pandera |
//! | [`workflow`] | durable transitions of the workflow engine with workers | `pgbench -N` on the same PostgreSQL server |
//!
//! Every bench runs under one [`protocol`]: the sides interleaved over
//! several rounds, each ratio reported as its median with the range, beside
//! a description of the machine and its load.
//!
//! The libraries keep only their criterion benches; the peers' scripts are
//! fed to the interpreter on standard input or with `-c`, so the binary needs
//! no file beside it.

pub mod attention;
pub mod data;
pub mod embed;
pub mod generate;
pub mod protocol;
pub mod train;
pub mod workflow;
