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

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};
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
    let mut seen = pool.epoch.load(SeqCst);
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

/// Whether the helpers run far from the caller: a cache line takes more than [`FAR_NS`] to go
/// there and back (another chiplet or socket, or a VM's vCPUs placed apart). Then handing a
/// small op's data to a helper costs more than the helper saves, and callers raise their
/// thresholds for splitting work (`parallel::worth_splitting`).
///
/// Measured by a short ping-pong with a helper, at most every [`PROBE_EVERY`], because a VM's
/// placement changes while it runs: on the 2-vCPU machine of BENCHMARKS.md the round trip
/// flips between 60-140 ns and 320-470 ns every few minutes, and the MNIST MLP step on two
/// threads between 124 and 232 µs, where one thread takes 198 µs in either mode.
pub(crate) fn far_apart() -> bool {
    static LAST: AtomicU64 = AtomicU64::new(0);
    static FAR: AtomicBool = AtomicBool::new(false);
    let now = clock_ns();
    let last = LAST.load(SeqCst);
    if (last == 0 || now.saturating_sub(last) > PROBE_EVERY.as_nanos() as u64)
        && LAST.compare_exchange(last, now.max(1), SeqCst, SeqCst).is_ok()
    {
        if let Some(ns) = round_trip_ns() {
            FAR.store(ns > FAR_NS, SeqCst);
        }
    }
    FAR.load(SeqCst)
}

/// The round trip above which the helpers count as far (the two modes above sit either side).
const FAR_NS: u64 = 250;
const PROBE_EVERY: Duration = Duration::from_millis(100);

/// Nanoseconds since the first call, never 0 after it.
fn clock_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

/// The mean round trip of a cache line between the caller and one helper, over `ROUNDS`
/// exchanges after a few to warm up; `None` when the pool is busy, has no helper, or no helper
/// joined within a millisecond.
fn round_trip_ns() -> Option<u64> {
    const ROUNDS: u32 = 32;
    const WARM: u32 = 4;
    const DONE: u32 = u32::MAX;
    let ball = AtomicU32::new(0);
    let claimed = AtomicBool::new(false);
    let mean = AtomicU64::new(0);
    let caller = std::thread::current().id();
    let wait = |want: u32, deadline: Instant| -> bool {
        loop {
            match ball.load(SeqCst) {
                b if b == want => return true,
                DONE => return false,
                _ if Instant::now() > deadline => return false,
                _ => std::hint::spin_loop(),
            }
        }
    };
    let work = || {
        // Long enough for a parked helper to wake: while the helpers are far, ops run on the
        // caller alone and the helpers park, and a probe that gave up on them early would
        // never see them come close again.
        let deadline = Instant::now() + Duration::from_millis(1);
        if std::thread::current().id() == caller {
            let mut start = Instant::now();
            for i in 0..WARM + ROUNDS {
                if i == WARM {
                    start = Instant::now();
                }
                ball.store(2 * i + 1, SeqCst);
                if !wait(2 * i + 2, deadline) {
                    ball.store(DONE, SeqCst);
                    return;
                }
            }
            mean.store(start.elapsed().as_nanos() as u64 / u64::from(ROUNDS), SeqCst);
            ball.store(DONE, SeqCst);
        } else if !claimed.swap(true, SeqCst) {
            for i in 0..WARM + ROUNDS {
                if !wait(2 * i + 1, deadline) {
                    return;
                }
                ball.store(2 * i + 2, SeqCst);
            }
        }
    };
    run(&work)?;
    Some(mean.load(SeqCst)).filter(|&ns| ns > 0)
}
