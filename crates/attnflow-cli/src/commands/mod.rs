//! One module per subcommand group.

pub mod attention;
pub mod workflow;
