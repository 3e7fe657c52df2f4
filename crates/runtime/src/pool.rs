//! A tiny persistent thread pool for the kernels' fork-join parallelism.
//!
//! Why not `std::thread::scope` per call: spawning and joining one thread costs tens of
//! microseconds on a quiet machine and hundreds on a busy one (measured 360-520 us on the 2-core
//! development VM under load), which is the whole run time of a mid-sized GEMM. Workers here are
//! created on first use (up to the largest thread count asked for). Between jobs a worker first
//! spins for [`SPIN`] on an atomic flag, then sleeps on a condition variable; the caller likewise
//! spins on the completion counter before sleeping. A model run issues one job per parallel
//! kernel, tens to hundreds per run and often only microseconds apart: a futex sleep/wake on
//! each side of every job cost 10-50 us apiece on the development VM, which is why the
//! workers stay hot for a short while (onnxruntime's pool spins for the same reason).
//!
//! One job runs at a time. A call that finds the pool busy (another thread's GEMM, or a GEMM
//! called from inside a pool task) runs all its tasks on the calling thread instead of waiting,
//! so nesting cannot deadlock. Results never depend on which thread ran a task.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::{Duration, Instant};

/// Most worker threads the pool will create.
const MAX_WORKERS: usize = 255;

/// How long an idle worker, or a caller waiting for its job, spins before sleeping.
const SPIN: Duration = Duration::from_micros(200);

/// Spins until `ready()` or until [`SPIN`] has passed; returns whether `ready()` held.
fn spin_until(ready: impl Fn() -> bool) -> bool {
    let t0 = Instant::now();
    let mut n = 0u32;
    loop {
        if ready() {
            return true;
        }
        n = n.wrapping_add(1);
        if n.is_multiple_of(64) && t0.elapsed() > SPIN {
            return ready();
        }
        std::hint::spin_loop();
    }
}

type Job<'a> = dyn Fn(usize) + Sync + 'a;

/// A job pointer with its lifetime erased, handed to a worker.
#[derive(Clone, Copy)]
struct JobPtr(*const Job<'static>);

// SAFETY: the pointee is `Sync`, so calling it from another thread is fine; `run` keeps it alive
// until every worker has reported completion (see `run`).
unsafe impl Send for JobPtr {}

struct Task {
    job: JobPtr,
    index: usize,
    done: Arc<Done>,
}

struct Done {
    /// Tasks not finished yet.
    remaining: AtomicUsize,
    /// Whether the caller gave up spinning and sleeps on `cv` (guarded by the mutex).
    waiting: Mutex<bool>,
    cv: Condvar,
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

struct Worker {
    slot: Mutex<Option<Task>>,
    /// Set (after the slot is filled) when a task is waiting in `slot`.
    ready: AtomicBool,
    /// Set while the worker sleeps on `cv` (written under the slot lock).
    sleeping: AtomicBool,
    cv: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Tasks run under catch_unwind, so a poisoned lock only means a panic was already recorded.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn pool() -> &'static Mutex<Vec<Arc<Worker>>> {
    static POOL: OnceLock<Mutex<Vec<Arc<Worker>>>> = OnceLock::new();
    POOL.get_or_init(|| Mutex::new(Vec::new()))
}

fn spawn_worker(id: usize) -> Option<Arc<Worker>> {
    let w = Arc::new(Worker {
        slot: Mutex::new(None),
        ready: AtomicBool::new(false),
        sleeping: AtomicBool::new(false),
        cv: Condvar::new(),
    });
    let mine = Arc::clone(&w);
    std::thread::Builder::new()
        .name(format!("pare-worker-{id}"))
        .spawn(move || worker_loop(&mine))
        .ok()?;
    Some(w)
}

fn worker_loop(w: &Worker) {
    loop {
        spin_until(|| w.ready.load(Ordering::Acquire));
        let task = {
            let mut slot = lock(&w.slot);
            loop {
                if let Some(t) = slot.take() {
                    w.ready.store(false, Ordering::Relaxed);
                    break t;
                }
                w.sleeping.store(true, Ordering::SeqCst);
                slot = w.cv.wait(slot).unwrap_or_else(|e| e.into_inner());
                w.sleeping.store(false, Ordering::SeqCst);
            }
        };
        // SAFETY: `run` does not return (so the job is alive) until `remaining` reaches 0, which
        // happens only after this call has finished.
        let r = catch_unwind(AssertUnwindSafe(|| unsafe { (*task.job.0)(task.index) }));
        if let Err(p) = r {
            lock(&task.done.panic).get_or_insert(p);
        }
        if task.done.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Last one: wake the caller if it went to sleep. It sets `waiting` and re-checks
            // `remaining` under the same lock, so the wake cannot be missed.
            let waiting = lock(&task.done.waiting);
            if *waiting {
                task.done.cv.notify_one();
            }
        }
    }
}

/// Runs `f(0)`, ..., `f(tasks - 1)`, each once, `f(0)` on the calling thread and the others on
/// pool workers, and returns when all have finished. A panic in any task is re-raised here after
/// all tasks have finished.
pub(crate) fn run(tasks: usize, f: &Job<'_>) {
    if tasks <= 1 {
        if tasks == 1 {
            f(0);
        }
        return;
    }
    let mut workers = match pool().try_lock() {
        Ok(w) => w,
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        Err(TryLockError::WouldBlock) => {
            (0..tasks).for_each(f);
            return;
        }
    };
    while workers.len() < (tasks - 1).min(MAX_WORKERS) {
        match spawn_worker(workers.len()) {
            Some(w) => workers.push(w),
            None => break,
        }
    }
    let remote = (tasks - 1).min(workers.len());
    let done = Arc::new(Done {
        remaining: AtomicUsize::new(remote),
        waiting: Mutex::new(false),
        cv: Condvar::new(),
        panic: Mutex::new(None),
    });
    // SAFETY: only the lifetime is erased; the pointer is dereferenced by workers strictly before
    // they decrement `remaining`, and this function waits for `remaining == 0` below on every
    // path (the local tasks run under catch_unwind), so `f` outlives every use.
    let job = JobPtr(unsafe { std::mem::transmute::<&Job<'_>, &'static Job<'static>>(f) });
    for (i, w) in workers.iter().take(remote).enumerate() {
        {
            let mut slot = lock(&w.slot);
            *slot = Some(Task {
                job,
                index: i + 1,
                done: Arc::clone(&done),
            });
            // Under the lock, so that it cannot outlive the worker's take (which clears it).
            w.ready.store(true, Ordering::Release);
        }
        // A worker that sets `sleeping` does so under the slot lock before waiting, so after
        // the store above it either sees the task or is seen sleeping here.
        if w.sleeping.load(Ordering::SeqCst) {
            w.cv.notify_one();
        }
    }
    // Task 0, plus any the pool could not take (thread creation failed), run here.
    let local = catch_unwind(AssertUnwindSafe(|| {
        f(0);
        (remote + 1..tasks).for_each(f);
    }));
    if !spin_until(|| done.remaining.load(Ordering::Acquire) == 0) {
        let mut waiting = lock(&done.waiting);
        *waiting = true;
        while done.remaining.load(Ordering::Acquire) > 0 {
            waiting = done.cv.wait(waiting).unwrap_or_else(|e| e.into_inner());
        }
    }
    drop(workers);
    if let Err(p) = local {
        resume_unwind(p);
    }
    let worker_panic = lock(&done.panic).take();
    if let Some(p) = worker_panic {
        resume_unwind(p);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn runs_every_task_once_and_nests() {
        let hits: Vec<AtomicUsize> = (0..7).map(|_| AtomicUsize::new(0)).collect();
        for _ in 0..50 {
            super::run(7, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
                // Nested use runs inline instead of deadlocking.
                super::run(2, &|_| {});
            });
        }
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 50));
    }

    #[test]
    fn panics_propagate_after_all_tasks_finish() {
        let hits = AtomicUsize::new(0);
        let r = std::panic::catch_unwind(|| {
            super::run(3, &|i| {
                hits.fetch_add(1, Ordering::SeqCst);
                if i == 2 {
                    panic!("task 2");
                }
            })
        });
        assert!(r.is_err());
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        // The pool still works afterwards.
        super::run(3, &|_| {});
    }
}
