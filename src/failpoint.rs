//! Crash points for the resume tests: a test build can make distls die at any journal write.

/// Test builds can make distls die (SIGKILL, no cleanup) around a journal write of a node step:
/// DISTLS_FAILPOINT=<node>:<step> right after it, <node>:<step>:before right before it
/// (e.g. `mim2@localhost:edited:before`: the file is edited, the journal still says `editing`).
/// DISTLS_FAILPOINT=walk kills at the first such point not listed in DISTLS_FAILPOINT_SEEN
/// (comma-separated), naming it on stderr, so a test can walk every point of a roll in order.
#[cfg(feature = "failpoints")]
pub fn failpoint(point: &str) {
    crash_in_process(point);
    let Ok(wanted) = std::env::var("DISTLS_FAILPOINT") else {
        return;
    };
    let walk_hit = wanted == "walk"
        && !std::env::var("DISTLS_FAILPOINT_SEEN")
            .is_ok_and(|seen| seen.split(',').any(|p| p == point));
    if wanted == point || walk_hit {
        eprintln!("failpoint: {point}");
        // SAFETY: sending a signal to our own pid.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

#[cfg(not(feature = "failpoints"))]
pub fn failpoint(_point: &str) {}

/// What an in-process crash throws: engine tests catch it where a real run would have died.
#[cfg(feature = "failpoints")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crash(pub String);

#[cfg(feature = "failpoints")]
thread_local! {
    static WALK: std::cell::RefCell<Option<std::collections::HashSet<String>>> =
        const { std::cell::RefCell::new(None) };
}

/// The in-process crash walk, on this thread only (an engine test on a current-thread runtime):
/// the first failpoint not in `seen` panics with [`Crash`] naming it, like DISTLS_FAILPOINT=walk
/// without a process to kill. `None` turns it off.
#[cfg(feature = "failpoints")]
pub fn walk_in_process(seen: Option<std::collections::HashSet<String>>) {
    WALK.with(|walk| *walk.borrow_mut() = seen);
}

#[cfg(feature = "failpoints")]
fn crash_in_process(point: &str) {
    let hit = WALK.with(|walk| {
        walk.borrow()
            .as_ref()
            .is_some_and(|seen| !seen.contains(point))
    });
    if hit {
        std::panic::panic_any(Crash(point.to_string()));
    }
}
