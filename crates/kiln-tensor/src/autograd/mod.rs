//! Reverse-mode autograd on the dynamic graph that ops record as they run.
//!
//! Only ops downstream of a [`Var`] (or another tracked tensor) are recorded, and nothing is
//! recorded inside [`no_grad`]. `backward` sorts the graph iteratively (deep graphs cannot
//! overflow the stack), frees each intermediate gradient as soon as it has been propagated, and
//! returns only the gradients of `Var`s.

mod rules;

use crate::{BinaryOp, DimVec, Error, ReduceOp, Result, Shape, Tensor, TensorId, UnaryOp};
use smallvec::{smallvec, SmallVec};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

/// How a tensor was computed: the inputs and what backward needs to know.
#[derive(Clone)]
pub(crate) enum Op {
    Unary(Tensor, UnaryOp),
    Binary(Tensor, Tensor, BinaryOp),
    BinaryScalar(Tensor, BinaryOp, f64),
    Reduce(Tensor, ReduceOp, DimVec),
    Matmul(Tensor, Tensor),
    Where(Tensor, Tensor, Tensor),
    Gather(Tensor, Tensor, usize),
    IndexSelect(Tensor, Tensor, usize),
    ScatterAdd(Tensor, Tensor, Tensor, usize),
    Cast(Tensor),
    Copy(Tensor),
    Reshape(Tensor),
    Permute(Tensor, DimVec),
    Narrow {
        input: Tensor,
        dim: usize,
        start: usize,
        step: usize,
    },
    Broadcast(Tensor),
    Cat(Vec<Tensor>, usize),
    Im2col(Tensor, crate::Window2d),
    /// A fused softmax (`true`: log-softmax) over the last dim.
    Softmax(Tensor, bool),
    /// `relu?(x @ w.t() + bias)` in one backend call (`x` `[M, K]`, `w` `[N, K]`).
    Linear {
        x: Tensor,
        w: Tensor,
        bias: Option<Tensor>,
        relu: bool,
    },
    /// A fused convolution of `x` with the weight as `[O, C * KH * KW]`, plus the bias and
    /// ReLU of its epilogue.
    Conv2d {
        x: Tensor,
        w: Tensor,
        bias: Option<Tensor>,
        relu: bool,
        win: crate::Window2d,
    },
    /// Fused cross-entropy rows of logits `[N, C]` against class indices `[N]`.
    CrossEntropy(Tensor, Tensor),
}

impl Op {
    /// The tensors this op read.
    pub(crate) fn inputs(&self) -> SmallVec<[&Tensor; 3]> {
        match self {
            Op::Unary(x, _)
            | Op::BinaryScalar(x, _, _)
            | Op::Reduce(x, _, _)
            | Op::Cast(x)
            | Op::Copy(x)
            | Op::Reshape(x)
            | Op::Permute(x, _)
            | Op::Narrow { input: x, .. }
            | Op::Broadcast(x)
            | Op::Gather(x, _, _)
            | Op::IndexSelect(x, _, _)
            | Op::Im2col(x, _)
            | Op::Softmax(x, _)
            | Op::CrossEntropy(x, _) => smallvec![x],
            Op::Binary(a, b, _) | Op::Matmul(a, b) => smallvec![a, b],
            Op::Conv2d { x, w, bias, .. } | Op::Linear { x, w, bias, .. } => [x, w].into_iter().chain(bias).collect(),
            Op::Where(_, t, f) => smallvec![t, f],
            Op::ScatterAdd(base, _, src, _) => smallvec![base, src],
            Op::Cat(xs, _) => xs.iter().collect(),
        }
    }
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// True unless inside [`no_grad`] on this thread.
pub fn is_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Runs `f` without recording any op (evaluation, optimizer updates).
///
/// ```
/// # use kiln_tensor::*;
/// # let dev = kiln_cpu::cpu();
/// let w = Var::new(Tensor::ones([2], DType::F32, &dev).unwrap());
/// let y = no_grad(|| w.as_tensor().exp()).unwrap();
/// assert!(!y.tracks_grad());
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}

/// Runs `f` with recording on, even inside `no_grad` (backward rules that differentiate a composed
/// form, such as the fallback of `col2im`).
pub(crate) fn with_grad<R>(f: impl FnOnce() -> R) -> R {
    let previous = GRAD_ENABLED.with(|g| g.replace(true));
    let out = f();
    GRAD_ENABLED.with(|g| g.set(previous));
    out
}

/// Disables recording until dropped (the RAII form of [`no_grad`]).
pub struct NoGradGuard {
    previous: bool,
}

impl NoGradGuard {
    /// Disables recording on this thread until the guard is dropped.
    pub fn new() -> Self {
        NoGradGuard { previous: GRAD_ENABLED.with(|g| g.replace(false)) }
    }
}
impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}
impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// A trainable tensor: a leaf whose gradient `backward` reports, updated in place by optimizers.
/// Clones share the value.
#[derive(Clone)]
pub struct Var {
    id: TensorId,
    value: Arc<RwLock<Tensor>>,
}

impl Var {
    /// Makes `t` trainable (its values are shared, not copied). Integer tensors are rejected by
    /// `backward`'s callers only in the sense that they never receive gradients.
    pub fn new(t: Tensor) -> Var {
        let id = TensorId::new();
        Var { id, value: Arc::new(RwLock::new(t.with_id(id, true))) }
    }

    /// The id its gradient is keyed by.
    pub fn id(&self) -> TensorId {
        self.id
    }

    /// The current value, as a tensor that records ops for autograd.
    ///
    /// Call it where the value is used (inside the training step): an optimizer update installs
    /// a *new* tensor with [`Var::set`], so a tensor taken out before the update keeps the old
    /// values.
    pub fn as_tensor(&self) -> Tensor {
        // A poisoned lock only means another thread panicked mid-`set`; the value is still a
        // whole tensor (set swaps an Arc), so recover it.
        self.value.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the value (same shape, dtype and device), keeping the id. Tensors computed from
    /// the old value keep seeing the old value.
    pub fn set(&self, t: &Tensor) -> Result<()> {
        let mut guard = self.value.write().unwrap_or_else(|e| e.into_inner());
        let cur = &*guard;
        if cur.shape() != t.shape() {
            return Err(Error::shape_mismatch("Var::set", cur.shape(), t.shape()));
        }
        cur.same_dtype("Var::set", t)?;
        cur.same_device("Var::set", t)?;
        *guard = t.with_id(self.id, true);
        Ok(())
    }

    /// Replaces the value with a tensor of the same shape but possibly another dtype or device
    /// (`model.to(device)`, `model.double()`), keeping the id.
    pub fn replace(&self, t: &Tensor) -> Result<()> {
        let mut guard = self.value.write().unwrap_or_else(|e| e.into_inner());
        if guard.shape() != t.shape() {
            return Err(Error::shape_mismatch("Var::replace", guard.shape(), t.shape()));
        }
        *guard = t.with_id(self.id, true);
        Ok(())
    }

    /// The shape of the value.
    pub fn shape(&self) -> Shape {
        self.as_tensor().shape().clone()
    }
}

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Var({:?})", self.as_tensor())
    }
}

/// Something a gradient can be looked up by: a [`Tensor`], a [`Var`] or a [`TensorId`].
pub trait GradKey {
    /// The id.
    fn grad_id(&self) -> TensorId;
}
impl GradKey for Tensor {
    fn grad_id(&self) -> TensorId {
        self.id()
    }
}
impl GradKey for Var {
    fn grad_id(&self) -> TensorId {
        self.id
    }
}
impl GradKey for TensorId {
    fn grad_id(&self) -> TensorId {
        *self
    }
}

/// The gradients of the `Var`s a loss depends on, returned by [`Tensor::backward`].
#[derive(Clone, Default)]
pub struct Gradients(HashMap<TensorId, Tensor>);

impl std::fmt::Debug for Gradients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl Gradients {
    /// The gradient of a var (same shape as its value), if the loss depends on it.
    pub fn get(&self, key: &impl GradKey) -> Option<&Tensor> {
        self.0.get(&key.grad_id())
    }
    /// Sets the gradient of `key` (after clipping or scaling it, for example).
    pub fn insert(&mut self, key: &impl GradKey, grad: Tensor) {
        self.0.insert(key.grad_id(), grad);
    }
    /// Removes and returns a gradient.
    pub fn remove(&mut self, key: &impl GradKey) -> Option<Tensor> {
        self.0.remove(&key.grad_id())
    }
    /// Number of gradients held.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True when no gradient is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Adds `other`'s gradients into these (gradient accumulation over several batches).
    pub fn accumulate(&mut self, mut other: Gradients) -> Result<()> {
        let _g = NoGradGuard::new();
        for (id, g) in std::mem::take(&mut other.0) {
            let sum = match self.0.remove(&id) {
                Some(prev) => prev.add(&g)?,
                None => g,
            };
            self.0.insert(id, sum);
        }
        Ok(())
    }
    /// Iterates over `(id, gradient)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&TensorId, &Tensor)> {
        self.0.iter()
    }
}

impl Tensor {
    /// Computes the gradients of this scalar with respect to every `Var` it depends on.
    ///
    /// Errors when the tensor has more than one element (use `.sum_all()` first) or is not a
    /// float.
    pub fn backward(&self) -> Result<Gradients> {
        if self.elem_count() != 1 {
            return Err(Error::invalid(
                "backward",
                format!(
                    "needs a tensor with one element, got shape {} (reduce it first, e.g. with sum_all or mean_all)",
                    self.shape()
                ),
            ));
        }
        self.float_only("backward")?;
        let seed = Tensor::ones(self.shape().clone(), self.dtype(), self.device())?;
        self.backward_with(seed)
    }

    /// Backpropagates `grad` (the gradient of some scalar with respect to this tensor).
    pub fn backward_with(&self, grad: Tensor) -> Result<Gradients> {
        if grad.shape() != self.shape() {
            return Err(Error::shape_mismatch("backward_with", self.shape(), grad.shape()));
        }
        if !self.tracks_grad() {
            return Err(Error::invalid(
                "backward",
                "the tensor does not depend on any Var (was it computed inside no_grad, or from detached tensors?)",
            ));
        }
        let _guard = NoGradGuard::new();
        let mut scratch = SCRATCH.with(|s| s.take());
        let result = self.propagate(grad, &mut scratch);
        scratch.clear();
        SCRATCH.with(|s| s.set(scratch));
        result
    }

    fn propagate(&self, grad: Tensor, scratch: &mut Scratch) -> Result<Gradients> {
        topological_order(self, scratch);
        let pending = &mut scratch.pending;
        pending.insert(self.id(), grad);
        let mut out = Gradients(scratch.grads.take().unwrap_or_default());
        for node in scratch.order.drain(..) {
            let Some(grad) = pending.remove(&node.id()) else { continue };
            let Some(op) = &node.0.op else {
                if node.0.is_var {
                    out.0.insert(node.id(), grad);
                }
                continue;
            };
            for (input, g) in rules::backward(op, &node, &grad)? {
                if !input.tracks_grad() {
                    continue;
                }
                let g = if g.dtype() != input.dtype() { g.to_dtype(input.dtype())? } else { g };
                let sum = match pending.remove(&input.id()) {
                    Some(prev) => prev.add(&g)?,
                    None => g,
                };
                pending.insert(input.id(), sum);
            }
        }
        Ok(out)
    }
}

/// The containers `backward` needs, kept per thread from call to call (emptied, with their
/// capacity) so that a training step's steady state asks the system allocator for nothing.
#[derive(Default)]
struct Scratch {
    order: Vec<Tensor>,
    visited: HashSet<TensorId>,
    stack: Vec<(Tensor, bool)>,
    pending: HashMap<TensorId, Tensor>,
    /// The map of the last dropped [`Gradients`], for the next one.
    grads: Option<HashMap<TensorId, Tensor>>,
}

impl Scratch {
    fn clear(&mut self) {
        self.order.clear();
        self.visited.clear();
        self.stack.clear();
        self.pending.clear();
    }
}

thread_local! {
    static SCRATCH: Cell<Scratch> = Cell::new(Scratch::default());
}

impl Drop for Gradients {
    fn drop(&mut self) {
        let mut map = std::mem::take(&mut self.0);
        if map.capacity() == 0 {
            return;
        }
        map.clear();
        // `try_with`: a thread's locals may already be gone when its last gradients drop.
        let _ = SCRATCH.try_with(|s| {
            let mut scratch = s.take();
            if scratch.grads.is_none() {
                scratch.grads = Some(map);
            }
            s.set(scratch);
        });
    }
}

/// Nodes reachable from `root` through tracked inputs, each after all the nodes that consume it
/// (reverse post-order), computed with an explicit stack.
fn topological_order(root: &Tensor, scratch: &mut Scratch) {
    let Scratch { order, visited, stack, .. } = scratch;
    stack.push((root.clone(), false));
    while let Some((node, children_done)) = stack.pop() {
        if children_done {
            order.push(node);
            continue;
        }
        if !visited.insert(node.id()) {
            continue;
        }
        stack.push((node.clone(), true));
        if let Some(op) = &node.0.op {
            for input in op.inputs() {
                if input.tracks_grad() && !visited.contains(&input.id()) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order.reverse();
}
