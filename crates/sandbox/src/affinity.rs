//! Which cores the server's threads run on.
//!
//! `ember server` binds each of its async workers to a core of its own when it has one
//! worker per core (see [`bind_worker`]). A thread or process started from a bound thread
//! would inherit that one core, so whatever the server starts (a runtime's process, a
//! sandbox's helper, a thread of its own) is started through [`unbound`], on every core the
//! server itself was given.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

/// The cores the process was started on, read before any thread was bound.
static PROCESS: OnceLock<Option<CpuSet>> = OnceLock::new();

/// The cores this process may run on, as it was started: read on the first call, which must
/// come before any thread is bound (`None` where they cannot be read).
pub fn process_cores() -> Option<CpuSet> {
    *PROCESS.get_or_init(|| sched_getaffinity(Pid::from_raw(0)).ok())
}

/// The cores of [`process_cores`], in order.
pub fn process_core_list() -> Vec<usize> {
    process_cores().as_ref().map(cores_in).unwrap_or_default()
}

/// The cores in `set`, in order.
pub fn cores_in(set: &CpuSet) -> Vec<usize> {
    (0..CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .collect()
}

/// Runs `f` with the calling thread on all of [`process_cores`], so that a thread or process
/// `f` starts runs there too; the calling thread's own binding is restored after.
pub fn unbound<T>(f: impl FnOnce() -> T) -> T {
    let Some(all) = process_cores() else {
        return f();
    };
    let me = Pid::from_raw(0);
    match sched_getaffinity(me) {
        Ok(own) if own != all && sched_setaffinity(me, &all).is_ok() => {
            let result = f();
            // Restoring can only fail if the process's cores were taken away meanwhile; the
            // thread then stays where the kernel allows.
            let _ = sched_setaffinity(me, &own);
            result
        }
        _ => f(),
    }
}

/// Puts the calling thread back on all of [`process_cores`] (a new thread that inherited a
/// worker's core).
pub fn unbind_current_thread() {
    if let Some(all) = process_cores() {
        let _ = sched_setaffinity(Pid::from_raw(0), &all);
    }
}

thread_local! {
    static BOUND: Cell<bool> = const { Cell::new(false) };
}

/// Binds the calling worker thread, the first time it is called on it, to the next of
/// `cores` (in turn: the first worker to call takes the first core). Called by each worker
/// as it first goes idle, which only workers do: the runtime's blocking threads are left on
/// every core.
pub fn bind_worker(cores: &[usize], next: &AtomicUsize) {
    if cores.is_empty() || BOUND.with(Cell::get) {
        return;
    }
    BOUND.with(|b| b.set(true));
    let cpu = cores[next.fetch_add(1, Ordering::Relaxed) % cores.len()];
    let mut set = CpuSet::new();
    if let Err(e) = set
        .set(cpu)
        .and_then(|()| sched_setaffinity(Pid::from_raw(0), &set))
    {
        tracing::debug!(cpu, error = %e, "a worker could not be bound to its core");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_cores() -> Vec<usize> {
        cores_in(&sched_getaffinity(Pid::from_raw(0)).unwrap())
    }

    /// The `Cpus_allowed_list` line of a process's status.
    fn allowed_list(status: &str) -> String {
        status
            .lines()
            .find(|l| l.starts_with("Cpus_allowed_list"))
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn what_a_bound_worker_starts_runs_on_every_core() {
        let all = process_core_list();
        let last = *all.last().expect("the test may run on some core");
        let (inherited, started, child, reset) = std::thread::spawn(move || {
            let next = AtomicUsize::new(0);
            bind_worker(&[last], &next);
            assert_eq!(own_cores(), vec![last], "the worker is bound to its core");
            bind_worker(&[0], &next);
            assert_eq!(own_cores(), vec![last], "a worker is bound once");
            let inherited = std::thread::spawn(own_cores).join().unwrap();
            let started = unbound(|| std::thread::spawn(own_cores)).join().unwrap();
            assert_eq!(own_cores(), vec![last], "the worker is bound again after");
            let child = unbound(|| {
                std::process::Command::new("cat")
                    .arg("/proc/self/status")
                    .output()
            })
            .unwrap();
            let reset = std::thread::spawn(|| {
                unbind_current_thread();
                own_cores()
            })
            .join()
            .unwrap();
            (inherited, started, child, reset)
        })
        .join()
        .unwrap();
        assert_eq!(
            inherited,
            vec![last],
            "a plain spawn inherits the worker's core"
        );
        assert_eq!(started, all, "a thread started through `unbound`");
        assert_eq!(reset, all, "a thread that unbinds itself");
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        assert_eq!(
            allowed_list(&String::from_utf8_lossy(&child.stdout)),
            allowed_list(&own),
            "a process started through `unbound`"
        );
    }
}
