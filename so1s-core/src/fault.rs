//! Fault injection for crash tests (feature `fault-injection`; without it every point is an
//! empty inline function).
//!
//! `SO1S_FAULT=<point>` or `SO1S_FAULT=<point>:<n>` kills the process with SIGKILL the
//! `n`-th time (default: the first) it reaches `point`, as `kill -9` would at that moment:
//! no destructor, no flush, nothing written after it. [`POINTS`] lists the points of the
//! upload → build → rollout → live sequence, in order.

/// The points of an upload's way to live, in the order it reaches them.
/// `rollout-instance-started` is in the rollout backends' deploy (an instance started,
/// traffic not switched yet), so the process backend passes it when it brings a live
/// version back at start too; Docker adopts the running container instead.
// Read by the crash tests, which only crash-test builds (feature `fault-injection`) expose it to.
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
pub const POINTS: &[&str] = &[
    "upload-stored",
    "build-started",
    "build-finished",
    "built-recorded",
    "deploy-started",
    "rollout-instance-started",
    "deploy-switched",
    "live-recorded",
];

/// Kills the process here if `SO1S_FAULT` names this point (and this is its `n`-th time).
#[cfg(feature = "fault-injection")]
pub fn point(name: &str) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;
    static FAULT: OnceLock<Option<(String, usize)>> = OnceLock::new();
    static REACHED: AtomicUsize = AtomicUsize::new(0);
    let fault = FAULT.get_or_init(|| {
        let spec = std::env::var("SO1S_FAULT").ok()?;
        let (point, n) = match spec.split_once(':') {
            Some((point, n)) => (point.to_owned(), n.parse().unwrap_or(1)),
            None => (spec, 1),
        };
        Some((point, n.max(1)))
    });
    if let Some((point, n)) = fault {
        if point == name && REACHED.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("SO1S_FAULT: killing the process at {name}");
            kill_self();
        }
    }
}

#[cfg(feature = "fault-injection")]
#[allow(unsafe_code)]
fn kill_self() {
    // SAFETY: raise(2) with a valid signal; SIGKILL ends the process at once.
    unsafe {
        libc::raise(libc::SIGKILL);
    }
}

/// Kills the process here if `SO1S_FAULT` names this point (and this is its `n`-th time).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &str) {}
