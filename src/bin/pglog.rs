//! The `pglog` command: read, follow, chart, check and repair pglog's table from the
//! terminal, with the configuration a logging program reads. Built with the `cli`
//! feature: `cargo install pglog --features cli`.

fn main() -> std::process::ExitCode {
    pglog::__cli_run(std::env::args_os())
}
