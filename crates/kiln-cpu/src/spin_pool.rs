//! Helper threads that stay awake between ops.
//!
//! A training step of a small model is a chain of ops of tens of microseconds each. Rayon's
//! workers go to sleep between them, and waking one costs about as much as the op: measured on
//! the MNIST MLP, two threads ran an epoch no faster than one, although the same products run
//! 1.5x faster on two threads back to back. OpenMP runtimes (and so PyTorch) keep their workers
//! spinning for a while after each parallel region; this pool does the same: each helper spins
//! for [`SPIN`] after its last job before it parks.
//!
//! One job runs at a time. A caller that finds the pool busy (a nested call from inside a task,
//! or another thread's op) gets `None` and runs its tasks some other way.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a helper keeps spinning for the next job before it parks, unless
/// `KILN_CPU_SPIN_US` says otherwise (`0` turns the pool off: every op then uses rayon's
/// sleeping workers, for machines shared with other busy processes).
const SPIN: Duration = Duration::from_micros(200);

fn spin() -> Option<Duration> {
    match std::env::var("KILN_CPU_SPIN_US").ok().and_then(|v| v.parse::<u64>().ok()) {
        Some(0) => None,
        Some(us) => Some(Duration::from_micros(us)),
        None => Some(SPIN),
    }
}

/// The job being run: a type-erased `&(dyn Fn() + Sync)` that lives until [`run`] returns.
type Job = *const (dyn Fn() + Sync + 'static);

struct Pool {
    helpers: usize,
    spin: Duration,
    /// Incremented for every job published.
    epoch: AtomicU64,
    job: Mutex<Option<SendJob>>,
    /// Whether helpers may still join the current job.
    open: AtomicBool,
    /// Helpers inside the current job.
    joined: AtomicUsize,
    /// Held by the caller for the whole of a job.
    busy: Mutex<()>,
    parked: AtomicUsize,
    /// Set when a task panicked on a helper.
    panicked: AtomicBool,
    park_lock: Mutex<()>,
    wake: Condvar,
}

#[derive(Clone, Copy)]
struct SendJob(Job);
// SAFETY: the pointer is only dereferenced while the caller that published it waits in `run`
// (see the open/joined protocol there), and the closure behind it is `Sync`.
unsafe impl Send for SendJob {}

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let spin = spin();
        let helpers = if spin.is_some() { rayon::current_num_threads().saturating_sub(1) } else { 0 };
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            helpers,
            spin: spin.unwrap_or(SPIN),
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            open: AtomicBool::new(false),
            joined: AtomicUsize::new(0),
            busy: Mutex::new(()),
            parked: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            park_lock: Mutex::new(()),
            wake: Condvar::new(),
        }));
        for i in 0..helpers {
            let spawned = std::thread::Builder::new().name(format!("kiln-cpu-{i}")).spawn(move || helper(pool));
            if spawned.is_err() {
                // Fewer helpers only means less parallelism; the caller always works too.
                break;
            }
        }
        pool
    })
}

/// The number of threads a job runs on (the caller and the helpers).
pub(crate) fn threads() -> usize {
    pool().helpers + 1
}

fn helper(pool: &'static Pool) {
    // The epoch the pool was made with, not the one this thread first reads: a job published
    // before the thread got going would otherwise go without it (the process's first op).
    let mut seen = 0;
    let mut flush = 0;
    loop {
        // Spin for the next job, then park until one comes.
        let start = Instant::now();
        let mut spins = 0u32;
        while pool.epoch.load(SeqCst) == seen {
            // Yielding lets another runnable thread (a data loader, the caller's next op on a
            // machine with few cores) have this core while we wait.
            std::thread::yield_now();
            spins += 1;
            if spins.is_multiple_of(8) && start.elapsed() > pool.spin {
                let guard = pool.park_lock.lock().unwrap_or_else(|e| e.into_inner());
                pool.parked.fetch_add(1, SeqCst);
                let mut guard = guard;
                while pool.epoch.load(SeqCst) == seen {
                    guard = pool.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
                pool.parked.fetch_sub(1, SeqCst);
                break;
            }
        }
        seen = pool.epoch.load(SeqCst);
        // Join, unless the caller has already closed the job (then it may be gone).
        pool.joined.fetch_add(1, SeqCst);
        if pool.open.load(SeqCst) {
            let job = *pool.job.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(SendJob(f)) = job {
                crate::simd::sync_flush(&mut flush);
                // SAFETY: `open` was true after we joined, so the caller is still in `run`,
                // waiting for `joined` to reach 0 before its closure goes out of scope.
                let call = std::panic::AssertUnwindSafe(|| unsafe { (*f)() });
                // A panicking task must not kill the helper with `joined` still counting it
                // (the caller would wait forever): the caller re-raises it instead.
                if std::panic::catch_unwind(call).is_err() {
                    pool.panicked.store(true, SeqCst);
                }
            }
        }
        pool.joined.fetch_sub(1, SeqCst);
    }
}

/// Runs `work` on the calling thread and every helper at once and returns when all are done;
/// `work` must share its tasks out itself (each call takes tasks until none are left). `None`
/// when the pool is busy or has no helpers: the caller then runs the tasks another way.
pub(crate) fn run(work: &(dyn Fn() + Sync)) -> Option<()> {
    let pool = pool();
    if pool.helpers == 0 {
        return None;
    }
    let _busy = pool.busy.try_lock().ok()?;
    // SAFETY: the lifetime is erased only for the helpers, which call `work` only while `open`
    // is set or they have joined before it was cleared; both end before this function returns.
    let erased: Job = unsafe { std::mem::transmute::<&(dyn Fn() + Sync), Job>(work) };
    *pool.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(SendJob(erased));
    pool.open.store(true, SeqCst);
    pool.epoch.fetch_add(1, SeqCst);
    if pool.parked.load(SeqCst) > 0 {
        let _guard = pool.park_lock.lock().unwrap_or_else(|e| e.into_inner());
        pool.wake.notify_all();
    }
    // Closes the job even if `work` panics: after this no helper can reach `work`.
    struct Close(&'static Pool);
    impl Drop for Close {
        fn drop(&mut self) {
            self.0.open.store(false, SeqCst);
            while self.0.joined.load(SeqCst) > 0 {
                std::hint::spin_loop();
            }
            *self.0.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
    let close = Close(pool);
    work();
    drop(close);
    if pool.panicked.swap(false, SeqCst) {
        panic!("a kiln-cpu task panicked on a helper thread (a bug: tasks return errors)");
    }
    Some(())
}
