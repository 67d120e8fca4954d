//! One module per `bantam` subcommand.

pub mod build;
pub mod new;
pub mod registry;
pub mod up;
pub mod watch;
