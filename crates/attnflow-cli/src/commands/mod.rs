//! One module per subcommand group.

pub mod attention;
pub mod embed;
pub mod inspect;
pub mod verify;
pub mod workflow;
