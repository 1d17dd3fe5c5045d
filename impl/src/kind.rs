//! Where a callback may be created, and so where it may be dropped: [`Local`] or [`Remote`].
//!
//! Every callback runs on the context's home thread. The kind says which threads may hold it before
//! and after:
//!
//! | kind | created through | closure bound | owner (`Bh`, `Timer`, `FdHandler`) |
//! |---|---|---|---|
//! | [`Local`] (the default) | [`AioContext`](crate::AioContext) (home thread) | `'static` (may hold `Rc`, `RefCell`, the context's state) | `!Send`: created, used and dropped on the home thread |
//! | [`Remote`] | [`Handle`](crate::Handle) (any thread) | `Send + 'static` | `Send` (and `Sync` where the methods are atomic) |
//!
//! Soundness rule: a `Local` closure is called and dropped only on the home thread. The owner is
//! `!Send`, so its drop is there; what the context's shared half (which a `Handle` on another thread
//! may drop last) can still hold of a `Local` callback is dropped by the home thread first: a `Local`
//! BH's closure is taken out by its owner's drop (or when its running call returns), a `Local` timer
//! is never armed after the context is dropped, and the context's drop finalises every handler. See
//! `impl/tests/miri.rs` (`local_*`) and the `compile_fail` examples on [`Local`].

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Local {}
    impl Sealed for super::Remote {}
}

/// [`Local`] or [`Remote`]: the type parameter of [`Bh`](crate::Bh), [`Timer`](crate::Timer) and
/// [`FdHandler`](crate::FdHandler). Sealed.
pub trait Kind: sealed::Sealed + 'static {
    /// Whether callbacks of this kind may be `!Send`.
    #[doc(hidden)]
    const LOCAL: bool;
}

/// Created on the home thread ([`AioContext::bh_new`](crate::AioContext::bh_new),
/// [`AioContext::timer_new`](crate::AioContext::timer_new), [`FdHandler::new`](crate::FdHandler::new)):
/// the closure need not be `Send`, and the owner cannot leave the home thread.
///
/// Each way it must not compile:
///
/// A `Local` BH cannot be sent to another thread (its drop must stay on the home thread):
///
/// ```compile_fail
/// let ctx = aioctx::AioContext::new().unwrap();
/// let bh = ctx.bh_new(|_| {});
/// std::thread::spawn(move || bh.schedule());
/// ```
///
/// Nor shared with one:
///
/// ```compile_fail
/// let ctx = aioctx::AioContext::new().unwrap();
/// let bh = std::sync::Arc::new(ctx.bh_new(|_| {}));
/// std::thread::spawn(move || bh.schedule());
/// ```
///
/// A `Local` timer cannot be sent:
///
/// ```compile_fail
/// let ctx = aioctx::AioContext::new().unwrap();
/// let t = ctx.timer_new(|_| {});
/// std::thread::spawn(move || t.mod_ns(0));
/// ```
///
/// A `Local` handler cannot be registered through a `Handle` (from another thread):
///
/// ```compile_fail
/// let ctx = aioctx::AioContext::new().unwrap();
/// let rc = std::rc::Rc::new(());
/// let h = aioctx::FdHandler::new().on_read(move |_| drop(rc.clone()));
/// ctx.handle().set_fd_handler(0, h).unwrap();
/// ```
///
/// Nor sent to another thread to be registered there:
///
/// ```compile_fail
/// let h = aioctx::FdHandler::new().on_read(|_| {});
/// std::thread::spawn(move || drop(h));
/// ```
///
/// A `Handle` takes only `Send` closures (BH, oneshot, timer, handler):
///
/// ```compile_fail
/// let ctx = aioctx::AioContext::new().unwrap();
/// let rc = std::rc::Rc::new(());
/// let _bh = ctx.handle().bh_new(move |_| drop(rc.clone()));
/// ```
///
/// ```compile_fail
/// let ctx = aioctx::AioContext::new().unwrap();
/// let rc = std::rc::Rc::new(());
/// ctx.handle().bh_oneshot(move || drop(rc));
/// ```
///
/// ```compile_fail
/// let ctx = aioctx::AioContext::new().unwrap();
/// let rc = std::rc::Rc::new(());
/// let _t = ctx.handle().timer_new(move |_| drop(rc.clone()));
/// ```
///
/// ```compile_fail
/// let rc = std::rc::Rc::new(());
/// let _h = aioctx::FdHandler::new_remote().on_read(move |_| drop(rc.clone()));
/// ```
///
/// A callback's view of itself cannot outlive the call:
///
/// ```compile_fail
/// let ctx = aioctx::AioContext::new().unwrap();
/// let mut keep = None;
/// let _bh = ctx.bh_new(move |this| keep = Some(this));
/// ```
///
/// The same, in the forms that compile: the `Send` schedule handle of a `Local` BH, and `Remote`
/// owners, may go to another thread:
///
/// ```
/// let ctx = aioctx::AioContext::new()?;
/// let rc = std::rc::Rc::new(std::cell::Cell::new(0));
/// let rc2 = rc.clone();
/// let bh = ctx.bh_new(move |_| rc2.set(rc2.get() + 1));
/// let s = bh.scheduler();
/// std::thread::spawn(move || s.schedule()).join().unwrap();
/// let remote = ctx.handle().bh_new(|_| {});
/// std::thread::spawn(move || remote.schedule()).join().unwrap();
/// assert!(ctx.poll(false));
/// assert_eq!(rc.get(), 1);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Local {
    /// `!Send + !Sync`: so is every owner generic over its kind that holds `PhantomData<K>`.
    _not_send: std::marker::PhantomData<*const ()>,
    /// Never constructed: a type-level marker.
    _never: std::convert::Infallible,
}

/// Created through a [`Handle`](crate::Handle), from any thread: the closure is `Send`, and so is the
/// owner.
#[derive(Debug)]
pub enum Remote {}

impl Kind for Local {
    const LOCAL: bool = true;
}
impl Kind for Remote {
    const LOCAL: bool = false;
}
