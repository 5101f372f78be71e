//! Running a tool and turning its failure into an [`Error`] that shows what it
//! printed.

use std::process::{Command, Output, Stdio};

use crate::error::{io_error, Error};

/// Runs `cmd` to completion; an error unless it exits successfully.
pub(crate) fn run(mut cmd: Command, what: &str) -> Result<Output, Error> {
    let output = cmd
        .output()
        .map_err(|e| io_error(format_args!("could not run {what}"), e))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(Error(format!(
            "{what} failed ({}):\n{}",
            output.status,
            command_output(&output)
        )))
    }
}

/// What a successful `cmd` printed on stdout, trimmed; `None` when it cannot run, fails,
/// or prints something that is not UTF-8. For asking tools (`pg_config`, `id`) questions.
pub(crate) fn answer(mut cmd: Command) -> Option<String> {
    let output = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8(output.stdout)
        .ok()
        .map(|text| text.trim().to_owned())
}

/// stdout then stderr, as text.
pub(crate) fn command_output(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text.trim_end().to_string()
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
