//! Running a kernel's independent tasks on the calling thread and rayon's workers together.
//!
//! `par_iter` called from a thread outside rayon's pool hands all the work to the pool and puts
//! the caller to sleep, which costs a wake-up on each side per op (tens of microseconds, as much
//! as a whole MLP-sized matrix product). Here the caller works like any helper, so an op's
//! latency is only its work plus one helper's start; each thread owns a range of the tasks (see
//! [`run_tasks`]).

use kiln_tensor::{Error, Result};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    // Participant p owns tasks p * tasks / n.. (p + 1) * tasks / n. The caller is always
    // participant 0, so each thread gets the same part of a tensor from one op to the next
    // and keeps it in its cache, where a shared counter dealt the parts out by race.
    //
    // A thread done with its own range takes tasks only from ranges whose owner has not begun
    // (a helper still waking, or busy elsewhere), never the tail of one being worked through:
    // the part it took would then be in the wrong cache at the next op. Where the threads sit
    // on different chips, each such line crosses at about 6 GB/s, and taking the last task of
    // the other thread's range made an Adam step over 100,352 parameters 2-3x slower than
    // leaving it there (40 -> 57-94 us, against 27 us without).
    let n = (helpers + 1).min(MAX_RANGES);
    let end = |p: usize| (p + 1) * tasks / n;
    let cursors: [Line<AtomicUsize>; MAX_RANGES] = std::array::from_fn(|p| Line(AtomicUsize::new(p * tasks / n)));
    let begun: [Line<AtomicBool>; MAX_RANGES] = std::array::from_fn(|_| Line(AtomicBool::new(false)));
    let (caller, joined) = (std::thread::current().id(), AtomicUsize::new(1));
    let work = || {
        let me = match std::thread::current().id() == caller {
            true => 0,
            false => joined.fetch_add(1, Ordering::Relaxed) % n,
        };
        for p in (me..n).chain(0..me) {
            let own = p == me;
            if own {
                begun[p].0.store(true, Ordering::Relaxed);
            }
            while own || !begun[p].0.load(Ordering::Relaxed) {
                let t = cursors[p].0.fetch_add(1, Ordering::Relaxed);
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

/// A value alone in its cache lines (two: the adjacent-line prefetcher fetches pairs). Each
/// thread writes its own cursor on every task; beside another thread's, each write would take
/// the line away from the other core.
#[repr(align(128))]
struct Line<T>(T);

/// Whether a kernel with `work` (elements, multiply-adds) splits over threads, given the amount
/// `base` from which splitting pays.
///
/// The same wherever the threads sit. On a VM whose two vCPUs move between sharing a chip and
/// sitting on different ones (BENCHMARKS.md), splitting used to cost the MNIST MLP step more
/// than it saved in the far placement (232 µs on two threads, 198 on one), and a probe raised
/// these bars 16x there. The cost was a thread taking the tail of the other's range (see
/// [`run_tasks`]): with each thread keeping to its own part, two threads take the far step
/// from 180-183 µs to 152-161 µs and the CNN step from 30.0 to 28.0-29.1 ms.
pub(crate) fn worth_splitting(work: usize, base: usize) -> bool {
    work >= base
}

/// The threads a kernel with `work` runs on: all of rayon's when [`worth_splitting`], else one.
pub(crate) fn threads_for(work: usize, base: usize) -> usize {
    if worth_splitting(work, base) {
        rayon::current_num_threads()
    } else {
        1
    }
}

/// The pieces of a split output, each behind the lock its one task takes; inline up to 64 so
/// that splitting an output asks the allocator for nothing. Outputs cut into more pieces than
/// that go through [`for_each_piece`], which hands them to at most 64 tasks.
pub(crate) type Pieces<P> = smallvec::SmallVec<[Mutex<P>; 64]>;

/// The most tasks [`for_each_piece`] makes: as many locked pieces as [`Pieces`] holds inline.
const MAX_GROUPS: usize = 64;

/// An output that splits at an index: a slice (at an element), or [`Rows`] (at a row).
pub(crate) trait Cut: Sized + Send {
    /// Elements, or rows.
    fn len(&self) -> usize;
    /// The part before `at` and the part from it.
    fn cut(self, at: usize) -> (Self, Self);
}

impl<U: Send> Cut for &mut [U] {
    fn len(&self) -> usize {
        <[U]>::len(self)
    }
    fn cut(self, at: usize) -> (Self, Self) {
        self.split_at_mut(at)
    }
}

/// Two outputs written row by row together, `widths.0` elements of `a` and `widths.1` of `b`
/// per row (softmax's rows and their maxima, pooling's indices and values).
pub(crate) struct Rows<'a, A, B> {
    /// The first output.
    pub(crate) a: &'a mut [A],
    /// The second output.
    pub(crate) b: &'a mut [B],
    /// Elements per row of each.
    pub(crate) widths: (usize, usize),
}

impl<A: Send, B: Send> Cut for Rows<'_, A, B> {
    fn len(&self) -> usize {
        let (wa, wb) = (self.widths.0.max(1), self.widths.1.max(1));
        (self.a.len() / wa).min(self.b.len() / wb)
    }
    fn cut(self, at: usize) -> (Self, Self) {
        let (a0, a1) = self.a.split_at_mut(at * self.widths.0);
        let (b0, b1) = self.b.split_at_mut(at * self.widths.1);
        (Rows { a: a0, b: b0, widths: self.widths }, Rows { a: a1, b: b1, widths: self.widths })
    }
}

/// Runs `f(i, piece_i)` for every `piece`-element piece of `out` (the last may be shorter), on
/// up to rayon's thread count of threads (the caller included). Consecutive pieces are dealt
/// out in at most 64 groups, one task each, so any number of pieces needs nothing from the
/// allocator: a locked piece each spilled [`Pieces`] onto the heap, once per op on more than
/// 2M elements and once per MNIST CNN step at batch 64. Returns the first error of any piece;
/// a group stops at its first error, the others run on.
pub(crate) fn for_each_piece<P: Cut, F>(out: P, piece: usize, f: F) -> Result<()>
where
    F: Fn(usize, P) -> Result<()> + Sync,
{
    let piece = piece.max(1);
    let n = out.len().div_ceil(piece);
    let groups = n.min(MAX_GROUPS);
    // Group g takes pieces first(g).. first(g + 1).
    let first = |g: usize| g * n / groups.max(1);
    let mut rest = Some(out);
    let mut locked: Pieces<Option<P>> = Pieces::new();
    for g in 0..groups {
        let Some(now) = rest.take() else { break };
        let at = ((first(g + 1) - first(g)) * piece).min(now.len());
        let (group, tail) = now.cut(at);
        locked.push(Mutex::new(Some(group)));
        rest = Some(tail);
    }
    run_tasks(groups, rayon::current_num_threads(), |g| {
        let mut slot = locked[g].lock().unwrap_or_else(|p| p.into_inner());
        let mut group = slot.take();
        for i in first(g)..first(g + 1) {
            let Some(now) = group.take() else { break };
            let at = piece.min(now.len());
            let (this, tail) = now.cut(at);
            f(i, this)?;
            group = Some(tail);
        }
        Ok(())
    })
}

/// Runs `f(chunk_index, chunk)` over `out` cut into `chunk`-element pieces, on up to rayon's
/// thread count of threads (the caller included); see [`for_each_piece`].
pub(crate) fn for_each_chunk_mut<U: Send, F>(out: &mut [U], chunk: usize, f: F)
where
    F: Fn(usize, &mut [U]) + Sync,
{
    let result = for_each_piece(out, chunk, |i, piece| {
        f(i, piece);
        Ok(())
    });
    debug_assert!(result.is_ok(), "tasks here never fail");
}

/// `f(0..n)` merged left to right, computed on up to rayon's thread count of threads (the
/// caller included): consecutive indices in at most 64 groups, each merged on one thread, then
/// the groups' results. Each thread takes a contiguous range of groups, as in every other split
/// op, so the part of a tensor a thread reads here is the part it wrote before (rayon's
/// `par_iter` dealt the parts out by race: see BENCHMARKS.md, 2026-12-01 (session 16)). The
/// grouping depends on `n` only, and up to 64 indices each is its own group. Asks the allocator
/// for nothing; `None` when `n` is 0.
pub(crate) fn map_fold<R, F, M>(n: usize, f: F, merge: M) -> Option<R>
where
    R: Send + Copy + Default,
    F: Fn(usize) -> R + Sync,
    M: Fn(R, R) -> R + Sync,
{
    let groups = n.min(MAX_GROUPS);
    let first = |g: usize| g * n / groups.max(1);
    let mut out: smallvec::SmallVec<[R; MAX_GROUPS]> = smallvec::smallvec![R::default(); groups];
    for_each_chunk_mut(&mut out, 1, |g, slot| {
        if let Some(merged) = (first(g)..first(g + 1)).map(&f).reduce(&merge) {
            slot[0] = merged;
        }
    });
    out.into_iter().reduce(merge)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{for_each_piece, map_fold, run_tasks, Rows};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every piece reaches `f` once, with its own index and elements, for piece counts below,
    /// at and above the 64 groups, and ragged last pieces.
    #[test]
    fn for_each_piece_hands_out_every_piece_once() {
        for (len, piece) in [(0, 4), (5, 8), (64, 1), (65, 1), (1000, 7), (4096, 3)] {
            let mut out = vec![0usize; len];
            for_each_piece(&mut out[..], piece, |i, p| {
                assert_eq!(p.len(), piece.min(len - i * piece), "len {len}, piece {i}");
                p.iter_mut().enumerate().for_each(|(k, x)| *x += i * piece + k + 1);
                Ok(())
            })
            .unwrap();
            assert_eq!(out, (1..=len).collect::<Vec<_>>(), "len {len}, pieces of {piece}");
        }
    }

    /// Two outputs cut at the same rows; an error in one piece comes back.
    #[test]
    fn for_each_piece_cuts_rows_and_returns_errors() {
        let (mut a, mut b) = (vec![0u32; 300 * 3], vec![0u64; 300]);
        for_each_piece(Rows { a: &mut a[..], b: &mut b[..], widths: (3, 1) }, 2, |i, Rows { a, b, .. }| {
            assert_eq!((a.len(), b.len()), (6, 2));
            a.fill(i as u32);
            b.fill(i as u64);
            Ok(())
        })
        .unwrap();
        assert!(a.chunks(6).enumerate().all(|(i, c)| c.iter().all(|&x| x == i as u32)));
        assert!(b.chunks(2).enumerate().all(|(i, c)| c.iter().all(|&x| x == i as u64)));
        let failed = for_each_piece(&mut a[..], 10, |i, _| match i {
            77 => Err(kiln_tensor::Error::invalid("test", "piece 77")),
            _ => Ok(()),
        });
        assert!(failed.is_err());
    }

    /// Merged in index order, each index once, for counts below, at and above the 64 groups:
    /// the merge keeps (first, last, whether every merge joined neighbours).
    #[test]
    fn map_fold_merges_in_index_order() {
        for n in [0usize, 1, 63, 64, 65, 200] {
            let join = |a: (usize, usize, bool), b: (usize, usize, bool)| (a.0, b.1, a.2 && b.2 && a.1 + 1 == b.0);
            let got = map_fold(n, |i| (i, i, true), join);
            assert_eq!(got, (n > 0).then(|| (0, n - 1, true)), "n = {n}");
        }
    }

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

    /// A thread done with its own range leaves a range whose owner has begun to that owner:
    /// the caller's tasks here are quick and the helper's slow, so a caller that took tasks
    /// from a range in progress would run some of the helper's.
    #[test]
    fn a_range_in_progress_is_left_to_its_owner() {
        use std::sync::atomic::AtomicBool;
        use std::time::{Duration, Instant};
        const TASKS: usize = 8;
        let caller = std::thread::current().id();
        let helper_began = AtomicBool::new(false);
        let on_caller: Vec<AtomicBool> = (0..TASKS).map(|_| AtomicBool::new(false)).collect();
        run_tasks(TASKS, 2, |t| {
            if t >= TASKS / 2 {
                helper_began.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            } else if t == 0 {
                // Wait (a while) for the helper, so that its range is in progress from here on.
                let deadline = Instant::now() + Duration::from_secs(2);
                while !helper_began.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::yield_now();
                }
            }
            on_caller[t].store(std::thread::current().id() == caller, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        let helper_ran = (TASKS / 2..TASKS).filter(|&t| !on_caller[t].load(Ordering::SeqCst)).count();
        if helper_ran == 0 {
            eprintln!("skipped: no helper joined within 2 s (a busy machine)");
            return;
        }
        assert_eq!(helper_ran, TASKS / 2, "the caller took tasks from the helper's range in progress");
    }
}
