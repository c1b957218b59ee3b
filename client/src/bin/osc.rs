//! `osc`: Berth's command line. Parses the arguments, builds a single-threaded runtime
//! and hands over to [`berth_client::cli::run`].

use std::io::IsTerminal;
use std::process::ExitCode;

use berth_client::cli::{self, Cli, ConfigDirs, Environment};
use clap::error::ErrorKind;
use clap::Parser;

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(cli::normalize_args(std::env::args_os())) {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    let env = Environment {
        config_dirs: ConfigDirs {
            cwd: std::env::current_dir().ok(),
            home: std::env::var_os("HOME").map(Into::into),
            xdg_config_home: std::env::var_os("XDG_CONFIG_HOME").map(Into::into),
        },
        stderr_is_terminal: std::io::stderr().is_terminal(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("Error: could not start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli, &env)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            for line in err.lines() {
                eprintln!("{line}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Help and version go to stdout with success; a missing command shows the help on
/// stderr; any other parse error becomes one `Error:` line. All failures exit 1.
fn usage_error(err: clap::Error) -> ExitCode {
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = err.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            ExitCode::FAILURE
        }
        _ => {
            let args: Vec<String> = std::env::args().skip(1).collect();
            let line = cli::usage_error_line(&err.render().to_string(), cli::subcommand_of(&args));
            eprintln!("{line}");
            ExitCode::FAILURE
        }
    }
}
