//! Faults a test injects into a running server: freezing every one of its processes
//! (what a stuck host, a VM pause or a debugger looks like from the network: the
//! kernel still accepts connections and acknowledges data, nothing answers).

use std::fs;
use std::process::Command;

use crate::command::run;
use crate::error::{io_error, Error};
use crate::Server;

impl Server {
    /// Stops every process of the server with SIGSTOP: the postmaster first (so it
    /// starts nothing new), then its children. Undo with [`Server::thaw`].
    pub fn freeze(&self) -> Result<(), Error> {
        self.signal_all("STOP")
    }

    /// Resumes every process [`Server::freeze`] stopped.
    pub fn thaw(&self) -> Result<(), Error> {
        self.signal_all("CONT")
    }

    /// The postmaster's process id, from `postmaster.pid`.
    pub fn postmaster_pid(&self) -> Result<u32, Error> {
        let path = self.data_dir.join("postmaster.pid");
        let text = fs::read_to_string(&path)
            .map_err(|e| io_error(format_args!("could not read {}", path.display()), e))?;
        text.lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .ok_or_else(|| Error(format!("no process id in {}", path.display())))
    }

    fn signal_all(&self, signal: &str) -> Result<(), Error> {
        let postmaster = self.postmaster_pid()?;
        let mut pids = vec![postmaster];
        pids.extend(children_of(postmaster));
        let mut cmd = Command::new("kill");
        cmd.arg(format!("-{signal}"));
        cmd.args(pids.iter().map(u32::to_string));
        run(cmd, "kill").map(drop)
    }
}

/// Processes whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // `pid (comm) state ppid ...`; comm may hold spaces, so read after the last ')'.
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}
