//! Running a kernel's independent tasks on the calling thread and rayon's workers together.
//!
//! `par_iter` called from a thread outside rayon's pool hands all the work to the pool and puts
//! the caller to sleep, which costs a wake-up on each side per op (tens of microseconds, as much
//! as a whole MLP-sized matrix product). Here the caller works like any helper, so an op's
//! latency is only its work plus one helper's start; each thread owns a range of the tasks (see
//! [`run_tasks`]).

use kiln_tensor::{Error, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The most task ranges a call splits its tasks into (more threads share them).
const MAX_RANGES: usize = 16;

/// Runs `task(0..tasks)`, each exactly once, on up to `threads` threads (the caller included).
/// Returns the first error any task returned; the other tasks still run.
pub(crate) fn run_tasks<F>(tasks: usize, threads: usize, task: F) -> Result<()>
where
    F: Fn(usize) -> Result<()> + Sync,
{
    let helpers = threads.min(tasks).saturating_sub(1);
    if helpers == 0 {
        return (0..tasks).try_for_each(task);
    }
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let run = |t: usize| {
        if let Err(e) = task(t) {
            first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
        }
    };
    // Participant p owns tasks p * tasks / n.. (p + 1) * tasks / n and runs them first, then
    // takes what is left of the others' ranges: the caller is always participant 0, so each
    // thread gets the same part of a tensor from one op to the next (and keeps it in its
    // cache), where a shared counter dealt the parts out by race.
    let n = (helpers + 1).min(MAX_RANGES);
    let end = |p: usize| (p + 1) * tasks / n;
    let cursors: [AtomicUsize; MAX_RANGES] = std::array::from_fn(|p| AtomicUsize::new(p * tasks / n));
    let (caller, joined) = (std::thread::current().id(), AtomicUsize::new(1));
    let work = || {
        let me = match std::thread::current().id() == caller {
            true => 0,
            false => joined.fetch_add(1, Ordering::Relaxed) % n,
        };
        for p in (me..n).chain(0..me) {
            loop {
                let t = cursors[p].fetch_add(1, Ordering::Relaxed);
                if t >= end(p) {
                    break;
                }
                run(t);
            }
        }
    };
    // The spinning pool when it has this many threads and is free; rayon's otherwise.
    let pooled = threads >= crate::spin_pool::threads() && crate::spin_pool::run(&work).is_some();
    if !pooled {
        rayon::in_place_scope(|s| {
            for _ in 0..helpers {
                s.spawn(|_| work());
            }
            work();
        });
    }
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Whether a kernel with `work` (elements, multiply-adds) splits over threads, given the amount
/// `base` that pays when the threads share a cache: 16 times more is needed when they are far
/// apart (`spin_pool::far_apart`). Measured on the MNIST MLP step in that mode: 232 µs on two
/// threads, 198 µs on one (124 µs on two when close); the CNN's millisecond ops still gain
/// from two threads there.
pub(crate) fn worth_splitting(work: usize, base: usize) -> bool {
    work >= base && (work >= base.saturating_mul(16) || !crate::spin_pool::far_apart())
}

/// The threads a kernel with `work` runs on: all of rayon's when [`worth_splitting`], else one.
pub(crate) fn threads_for(work: usize, base: usize) -> usize {
    if worth_splitting(work, base) {
        rayon::current_num_threads()
    } else {
        1
    }
}

/// The pieces of a split output, each behind the lock its one task takes; inline up to 64 (a
/// batch of 64 images, an optimizer's chunks) so that splitting a step's outputs asks the
/// allocator for nothing.
pub(crate) type Pieces<P> = smallvec::SmallVec<[Mutex<P>; 64]>;

/// Runs `f(chunk_index, chunk)` over `out` cut into `chunk`-element pieces, on up to rayon's
/// thread count of threads (the caller included).
pub(crate) fn for_each_chunk_mut<U: Send, F>(out: &mut [U], chunk: usize, f: F)
where
    F: Fn(usize, &mut [U]) + Sync,
{
    // Each piece sits behind its own lock, taken once by the one task that owns it.
    let pieces: Pieces<&mut [U]> = out.chunks_mut(chunk.max(1)).map(Mutex::new).collect();
    let threads = rayon::current_num_threads();
    let result = run_tasks(pieces.len(), threads, |i| {
        let mut piece = pieces[i].lock().unwrap_or_else(|p| p.into_inner());
        f(i, &mut piece);
        Ok(())
    });
    debug_assert!(result.is_ok(), "tasks here never fail");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::run_tasks;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every task runs exactly once, from several threads at once (so that some calls find the
    /// awake pool busy and take rayon's path), including nested calls from inside a task.
    #[test]
    fn every_task_runs_once_with_concurrent_and_nested_callers() {
        let callers: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(|| {
                    for round in 0..500 {
                        let counts: Vec<AtomicUsize> = (0..37).map(|_| AtomicUsize::new(0)).collect();
                        run_tasks(37, 8, |i| {
                            if i == 5 && round % 7 == 0 {
                                run_tasks(3, 8, |_| Ok(()))?;
                            }
                            counts[i].fetch_add(1, Ordering::Relaxed);
                            Ok(())
                        })
                        .unwrap();
                        assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1), "round {round}");
                    }
                })
            })
            .collect();
        for c in callers {
            c.join().unwrap();
        }
    }
}
