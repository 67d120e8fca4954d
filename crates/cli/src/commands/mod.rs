//! One module per `bantam` subcommand.

pub mod build;
pub mod up;
