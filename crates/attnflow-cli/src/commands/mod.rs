//! One module per subcommand group.

pub mod attention;
pub mod bench;
pub mod bench_generate;
pub mod blueprint;
pub mod data;
pub mod embed;
pub mod eval_lm;
pub mod generate;
pub mod inspect;
pub mod run;
pub mod train;
pub mod verify;
pub mod workflow;
