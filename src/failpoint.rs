//! Crash points for the resume tests: a test build can make distls die at any journal write.

/// Test builds can make distls die (SIGKILL, no cleanup) around a journal write of a node step:
/// DISTLS_FAILPOINT=<node>:<step> right after it, <node>:<step>:before right before it
/// (e.g. `mim2@localhost:edited:before`: the file is edited, the journal still says `editing`).
/// DISTLS_FAILPOINT=walk kills at the first such point not listed in DISTLS_FAILPOINT_SEEN
/// (comma-separated), naming it on stderr, so a test can walk every point of a roll in order.
#[cfg(feature = "failpoints")]
pub fn failpoint(point: &str) {
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
