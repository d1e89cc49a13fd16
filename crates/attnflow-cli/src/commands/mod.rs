//! One module per subcommand group.

pub mod attention;
pub mod bench;
pub mod blueprint;
pub mod data;
pub mod embed;
pub mod eval_lm;
pub mod generate;
pub mod inspect;
pub mod run;
pub mod store;
pub mod train;
pub mod ui;
pub mod verify;
pub mod worker;
pub mod workflow;
