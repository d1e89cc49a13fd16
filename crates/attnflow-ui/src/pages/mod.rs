//! One module per page; each builds its whole page from the request's
//! parameters, or says with a status why it cannot.

pub mod compare;
pub mod quarantine;
pub mod run;
pub mod runs;
pub mod workflow;
