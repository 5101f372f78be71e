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
    // During the thread's teardown the thread-local may be gone: no scope then.
    let previous = CURRENT
        .try_with(|current| current.try_borrow_mut().map(|mut s| s.replace(name)).ok())
        .ok()
        .flatten()
        .flatten();
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
        let _ = CURRENT.try_with(|current| {
            if let Ok(mut scope) = current.try_borrow_mut() {
                *scope = previous;
            }
        });
    }
}

/// This thread's current scope, if any. None during the thread's teardown, when the
/// thread-local may be gone already (a log call from another thread-local's destructor):
/// `with` would panic there, and that panic would abort the process.
pub(crate) fn current() -> Option<String> {
    CURRENT
        .try_with(|current| {
            current
                .try_borrow()
                .ok()
                .and_then(|scope| scope.as_deref().map(str::to_owned))
        })
        .ok()
        .flatten()
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
