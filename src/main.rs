//! The `vault` binary: parse, run, map the outcome to an exit code.

use clap::Parser;

use atlasvault::cli::{self, exit, Cli};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let code = match cli::run(cli) {
        Ok(code) => code,
        Err(atlasvault::Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            exit::OK
        }
        Err(e) => {
            let code = cli::exit_code(&e);
            eprintln!("vault: {:#}", anyhow::Error::new(e));
            code
        }
    };
    std::process::exit(code);
}
