//! A thread's current scope: the `scope` column of records that do not set one.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::render::storable;

thread_local! {
    static CURRENT: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// Sets the `scope` column of records logged on this thread until the returned guard is
/// dropped; the scope that was current before then applies again. A record's own
/// `scope` key-value wins over it.
///
/// For the phases of a CLI tool or a batch job: set the scope once per phase instead of
/// on every log call. Scopes nest; the innermost applies.
///
/// # Examples
///
/// ```no_run
/// let _guard = pglog::init()?;
/// {
///     let _scope = pglog::scope("import");
///     log::info!(rows = 1200; "loaded"); // scope = 'import'
///     log::warn!(scope = "cleanup"; "skipped a row"); // scope = 'cleanup'
/// }
/// log::info!("done"); // scope IS NULL
/// # Ok::<(), pglog::Error>(())
/// ```
pub fn scope(name: impl Into<String>) -> Scope {
    let name: Arc<str> = storable(name.into()).into();
    let previous = CURRENT.with(|current| current.replace(Some(name)));
    Scope {
        previous,
        _same_thread: PhantomData,
    }
}

/// The guard [`scope`] returns; dropping it ends the scope.
#[must_use = "the scope ends as soon as this guard is dropped"]
#[derive(Debug)]
pub struct Scope {
    previous: Option<Arc<str>>,
    /// The scope belongs to the thread that set it: the guard must drop there.
    _same_thread: PhantomData<*const ()>,
}

impl Drop for Scope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|current| *current.borrow_mut() = previous);
    }
}

/// This thread's current scope, if any.
pub(crate) fn current() -> Option<String> {
    CURRENT.with(|current| current.borrow().as_deref().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_restore() {
        assert_eq!(current(), None);
        let outer = scope("outer");
        {
            let _inner = scope("inner");
            assert_eq!(current().as_deref(), Some("inner"));
        }
        assert_eq!(current().as_deref(), Some("outer"));
        std::thread::spawn(|| assert_eq!(current(), None))
            .join()
            .unwrap();
        drop(outer);
        assert_eq!(current(), None);
    }

    #[test]
    fn nul_in_a_scope_name_is_storable() {
        let _s = scope("a\0b");
        assert_eq!(current().as_deref(), Some("a\u{2400}b"));
    }
}
