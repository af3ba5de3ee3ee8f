//! The store writer's CPU priority.
//!
//! Persisting is background work next to serving spokes: a spoke is sent its new
//! assignments, and its reports are answered from memory, before the writer makes them
//! durable (`Fleet::apply`, `Fleet::record_status` only queue their writes). When every
//! core is busy, as in a fan-out to thousands of spokes, the writer should take the CPU
//! last, the way RocksDB runs its compaction threads at a lower priority. It is not
//! starved: the kernel's fair scheduler still gives a thread at nice +10 about a tenth of
//! a normal thread's share, so a saturated hub commits in fewer, larger groups and an
//! idle one at once. What awaits a commit (a registration, a token's use, an admin
//! command) waits longer only while the cores are saturated (docs/benchmarks.md, issue
//! 18 point 7: 10,000 spokes registered as fast as before).

/// How much lower than the hub's other threads the writer runs (nice is -20..=19).
const WRITER_NICE_OFFSET: i32 = 10;

/// Lowers the calling thread's CPU priority by [`WRITER_NICE_OFFSET`]. Linux keeps the
/// nice value per thread, so only this thread changes. A failure costs only priority,
/// so it is logged, not raised.
#[cfg(target_os = "linux")]
pub(super) fn lower_this_thread() {
    use rustix::process::{getpriority_process, setpriority_process};
    let tid = Some(rustix::thread::gettid());
    let result = getpriority_process(tid)
        .and_then(|now| setpriority_process(tid, (now + WRITER_NICE_OFFSET).min(19)));
    if let Err(e) = result {
        tracing::debug!(error = %e, "could not lower the store writer's CPU priority");
    }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn lower_this_thread() {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use rustix::process::getpriority_process;

    #[test]
    fn only_the_calling_thread_is_lowered() {
        let me = || getpriority_process(Some(rustix::thread::gettid())).expect("getpriority");
        let before = me();
        let lowered = std::thread::spawn(move || {
            super::lower_this_thread();
            me()
        })
        .join()
        .expect("thread");
        assert_eq!(lowered, (before + super::WRITER_NICE_OFFSET).min(19));
        assert_eq!(me(), before, "the other threads keep their priority");
    }
}
