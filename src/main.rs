//! The `dind-injector` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    dind_injector::cli::main()
}
