//! Development certificates: a CA and a serving certificate, generated in Rust.

use std::path::PathBuf;
use std::process::ExitCode;

/// Options of `certs`.
#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// Where to write ca.crt, tls.crt and tls.key.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
}

/// Runs `certs`.
pub fn run(_args: &CertsArgs) -> Result<ExitCode, String> {
    Err("not implemented yet".into())
}
