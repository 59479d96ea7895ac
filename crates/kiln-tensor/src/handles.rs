//! Reuse of the two small allocations behind every tensor: its handle (`Arc<TensorInner>`) and
//! its type-erased storage (`AnyStorage`).
//!
//! A training step makes and drops the same few dozen tensors every time. Without reuse each one
//! asked `malloc` for a handle and a storage cell (the backend's pool already recycles the element
//! buffers): on the MLP step that was two thirds of the remaining system allocations. Here a
//! dropped tensor whose handle nobody else holds gives up what it refers to at once (its graph
//! inputs, and its storage, whose buffer goes back to the backend's pool), and the emptied
//! allocation is kept on a per-thread free list for the next tensor. A storage cell is kept the
//! same way, by backend storage type, when its last tensor goes.
//!
//! Nothing is shared between threads (no locks, no contended counters): a thread reuses what it
//! dropped itself, at most [`KEEP`] of each, and its lists are freed when it exits.

use crate::device::{AnyStorage, Slot};
use crate::tensor::{Tensor, TensorInner};
use std::any::TypeId;
use std::cell::RefCell;
use std::sync::Arc;

/// Emptied handles (and storage cells per type) kept per thread: more than a step of the models
/// in `examples/` drops, few enough to be a few tens of KiB.
const KEEP: usize = 256;

#[derive(Default)]
struct FreeLists {
    tensors: Vec<Arc<TensorInner>>,
    /// Emptied storage cells by the `TypeId` of their `Slot<S>`; one entry per backend in use.
    storages: Vec<(TypeId, Vec<AnyStorage>)>,
    /// What a kept handle points at instead of its old storage (one per thread, shared).
    no_storage: Option<AnyStorage>,
}

thread_local! {
    static FREE: RefCell<FreeLists> = RefCell::new(FreeLists::default());
}

/// A tensor handle holding `inner`, in a kept allocation when this thread has one.
pub(crate) fn tensor(inner: TensorInner) -> Tensor {
    // `try_with`: during thread exit the lists may be gone; then allocate.
    let kept = FREE.try_with(|f| f.borrow_mut().tensors.pop()).ok().flatten();
    if let Some(mut arc) = kept {
        if let Some(slot) = Arc::get_mut(&mut arc) {
            // Drops the kept handle's leftovers (a shared empty storage, a device clone).
            *slot = inner;
            return Tensor::from_arc(arc);
        }
    }
    Tensor::from_arc(Arc::new(inner))
}

/// Gives up a tensor handle. When it was the last one, what it refers to is released now and
/// the allocation is kept for [`tensor`].
pub(crate) fn release(mut arc: Arc<TensorInner>) {
    let Some(inner) = Arc::get_mut(&mut arc) else { return };
    let Ok(empty) = FREE.try_with(|f| f.borrow_mut().no_storage.get_or_insert_with(empty_storage).clone()) else {
        return;
    };
    // Taken out before they drop, with no borrow of the lists held: dropping the op drops its
    // input tensors, which come back here.
    let op = inner.op.take();
    let storage = std::mem::replace(&mut inner.storage, empty);
    drop(op);
    release_storage(storage);
    let _ = FREE.try_with(|f| {
        let mut f = f.borrow_mut();
        if f.tensors.len() < KEEP {
            f.tensors.push(arc);
        }
    });
}

fn empty_storage() -> AnyStorage {
    Arc::new(Slot::<()>(None))
}

/// A storage cell holding `s`, in a kept cell of the same type when this thread has one.
pub(crate) fn storage<S: Send + Sync + 'static>(s: S) -> AnyStorage {
    let id = TypeId::of::<Slot<S>>();
    let kept = FREE
        .try_with(|f| f.borrow_mut().storages.iter_mut().find(|(t, _)| *t == id).and_then(|(_, cells)| cells.pop()))
        .ok()
        .flatten();
    if let Some(mut cell) = kept {
        if let Some(slot) = Arc::get_mut(&mut cell).and_then(|c| c.as_any_mut().downcast_mut::<Slot<S>>()) {
            slot.0 = Some(s);
            return cell;
        }
    }
    Arc::new(Slot(Some(s)))
}

/// Gives up a storage handle. When it was the last one, the backend storage is dropped now (its
/// buffer goes back to the backend's pool) and the emptied cell is kept for [`storage`].
fn release_storage(mut cell: AnyStorage) {
    let Some(slot) = Arc::get_mut(&mut cell) else { return };
    let Some(id) = slot.clear() else { return };
    let _ = FREE.try_with(|f| {
        let mut f = f.borrow_mut();
        let at = match f.storages.iter().position(|(t, _)| *t == id) {
            Some(at) => at,
            None => {
                f.storages.push((id, Vec::new()));
                f.storages.len() - 1
            }
        };
        let cells = &mut f.storages[at].1;
        if cells.len() < KEEP {
            cells.push(cell);
        }
    });
}
