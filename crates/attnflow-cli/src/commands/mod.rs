//! One module per subcommand group.

pub mod attention;
pub mod embed;
pub mod workflow;
