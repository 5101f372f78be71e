//! Programs run as child processes of a test binary.
//!
//! A process can install a global logger once, and some checks read what a program wrote
//! on stderr: such tests live in `harness = false` binaries whose `main` runs the checks
//! (registered once with [`checks!`](crate::checks)), or, when `PGLOG_TEST_CHILD` names a
//! program, runs that program instead.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The variable that tells a test binary which child program to run.
pub const CHILD: &str = "PGLOG_TEST_CHILD";

/// The child program this process should run, if it is a child.
pub fn child_program() -> Option<String> {
    std::env::var(CHILD).ok()
}

/// How long a child program may run before the test fails: a bound on hangs, far above
/// what any child needs.
pub const LIMIT: Duration = Duration::from_secs(180);

/// A variable the parent set for its child program.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"))
}

/// Runs the named checks (all, or those matching the command line's filters), prints
/// libtest-style lines, and exits non-zero when any failed. See [`checks!`](crate::checks).
pub fn run_checks(checks: &[(&str, fn())]) {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed) = (0, 0);
    for (name, check) in checks {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let started = Instant::now();
        match std::panic::catch_unwind(*check) {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:.1?})", started.elapsed());
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED");
            }
        }
    }
    let status = if failed == 0 { "ok" } else { "FAILED" };
    println!("\ntest result: {status}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out\n");
    if failed > 0 {
        std::process::exit(101);
    }
}

/// A command that runs `program` in a child process of this test binary.
pub fn child_command(program: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(CHILD, program);
    cmd
}

/// Runs `program` in a child process of this test binary and waits for it, at most
/// [`LIMIT`]: a child that hangs is killed and the test fails.
pub fn run_child(program: &str, envs: &[(&str, &str)]) -> Output {
    let mut cmd = child_command(program);
    cmd.envs(envs.iter().copied());
    run_command(cmd)
}

/// Runs `program` in `dir` with nothing of the developer's environment: none of the
/// PG*, PGLOG_* or STOGGER_* variables (nor anything else) leaks in.
pub fn run_in(dir: &Path, program: &str, envs: &[(&str, &str)]) -> Output {
    let mut cmd = child_command(program);
    cmd.env_clear()
        .env(CHILD, program)
        .envs(envs.iter().copied())
        .current_dir(dir);
    run_command(cmd)
}

/// Runs `cmd` with its output captured, at most [`LIMIT`].
pub fn run_command(mut cmd: Command) -> Output {
    let limit = LIMIT;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    // Drain both pipes while waiting: a child blocked on a full pipe would look hung.
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            pipe.read_to_end(&mut buf).ok();
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
            panic!(
                "child still running after {limit:?}: killed\nstderr tail:\n{}",
                tail(&stderr, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// What a child printed on stdout.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What a child printed on stderr.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// What a child printed, both streams.
pub fn printed(output: &Output) -> String {
    stdout(output) + &stderr(output)
}

/// pglog's notices among what a child printed on stderr.
pub fn notices(output: &Output) -> Vec<String> {
    stderr(output)
        .lines()
        .filter(|l| l.starts_with("pglog:"))
        .map(str::to_owned)
        .collect()
}

/// Fails with what the child printed unless it exited successfully.
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "child failed: {}\nstdout:\n{}\nstderr tail:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        tail(&String::from_utf8_lossy(&output.stderr), 40)
    );
}

/// Fails with the notices when the child printed any `pglog:` line.
pub fn assert_no_notices(output: &Output) {
    let notices = notices(output);
    assert!(
        notices.is_empty(),
        "no notices expected, got:\n{}",
        notices.join("\n")
    );
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
