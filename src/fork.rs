//! Telling a forked child from the process that built the logger.
//!
//! After `fork()` the child holds copies of its parent's sockets, queues and locks, but
//! none of its threads. A child that wrote on its parent's database session would corrupt
//! the parent's protocol stream (or read the parent's answers and leave it waiting), and
//! a child that closed one would end the parent's session. So everything that talks to
//! the database belongs to one process, marked with an [`Owner`], and a process that finds
//! something owned by another builds its own and never touches, nor drops, the original.
//!
//! Checking is on the hot path of every log call, where `getpid()` (a system call, about
//! 100 ns here) would cost a batch-mode enqueue a quarter of its time. On Linux a
//! `pthread_atfork` child handler bumps a generation counter instead, so a check is one
//! atomic load; elsewhere the process id is compared. This is the crate's only `unsafe`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Once;

/// Bumped in every child right after `fork()`.
static GENERATION: AtomicU32 = AtomicU32::new(0);
/// Whether the fork handler is registered; without it the process id is compared.
static HANDLER: AtomicBool = AtomicBool::new(false);

/// Who made a thing: the process, and the fork generation it was made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    generation: u32,
    pid: u32,
}

impl Owner {
    /// The calling process.
    pub fn current() -> Owner {
        watch();
        Owner {
            generation: GENERATION.load(Ordering::Acquire),
            pid: std::process::id(),
        }
    }

    /// Whether the calling process is this owner (and not a child forked from it).
    pub fn is_current(&self) -> bool {
        GENERATION.load(Ordering::Acquire) == self.generation
            && (HANDLER.load(Ordering::Acquire) || std::process::id() == self.pid)
    }
}

/// This process's fork generation (see [`Owner`]).
pub(crate) fn generation() -> u32 {
    watch();
    GENERATION.load(Ordering::Acquire)
}

/// The calling process's id, as `std::process::id()`, without a system call per call
/// where the fork handler is registered: the id is kept with the generation it was read
/// in, and read again in a new generation (a forked child).
pub(crate) fn pid() -> u32 {
    /// `generation << 32 | pid`, or 0 before the first read (no process has id 0).
    static CACHED: AtomicU64 = AtomicU64::new(0);
    let generation = generation();
    let cached = CACHED.load(Ordering::Relaxed);
    if HANDLER.load(Ordering::Acquire)
        && cached as u32 != 0
        && cached >> 32 == u64::from(generation)
    {
        return cached as u32;
    }
    let pid = std::process::id();
    CACHED.store(
        u64::from(generation) << 32 | u64::from(pid),
        Ordering::Relaxed,
    );
    pid
}

/// Registers the fork handler, once per process (a child inherits it).
fn watch() {
    static ONCE: Once = Once::new();
    ONCE.call_once(register);
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
fn register() {
    /// Runs in the child, where only async-signal-safe work is allowed: one atomic add.
    extern "C" fn in_child() {
        GENERATION.fetch_add(1, Ordering::AcqRel);
    }
    // SAFETY: `pthread_atfork` only records the function pointer; `in_child` is a plain
    // `extern "C" fn` without arguments that touches nothing but an atomic, which is
    // async-signal-safe and so allowed between fork() and exec(). A failure (ENOMEM) is
    // reported by the return value and changes nothing; the process id is then compared.
    let registered = unsafe { libc::pthread_atfork(None, None, Some(in_child)) } == 0;
    HANDLER.store(registered, Ordering::Release);
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn register() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_process_owns_what_it_makes() {
        let owner = Owner::current();
        assert!(owner.is_current());
        assert_eq!(owner, Owner::current());
    }

    #[test]
    fn another_generation_or_process_is_another_owner() {
        let owner = Owner::current();
        let older = Owner {
            generation: owner.generation.wrapping_sub(1),
            ..owner
        };
        assert!(!older.is_current());
        let other_pid = Owner {
            pid: owner.pid.wrapping_add(1),
            ..owner
        };
        // With the handler, the generation alone decides (no system call per check).
        assert_eq!(other_pid.is_current(), HANDLER.load(Ordering::Acquire));
    }

    #[test]
    fn the_cached_pid_is_the_process_id() {
        assert_eq!(pid(), std::process::id());
        assert_eq!(pid(), std::process::id());
    }
}
