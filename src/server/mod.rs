//! The HTTPS admission server.

use std::process::ExitCode;

/// Options of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

/// Runs `serve` until SIGTERM.
pub fn serve(_args: ServeArgs) -> Result<ExitCode, String> {
    Err("not implemented yet".into())
}
