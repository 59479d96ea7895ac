//! `Device`: a backend value with its type erased, so tensors carry their device at run time
//! and model code never names a backend type. Registration is open: `Device::new(any_backend)`.

use crate::backend::{Backend, ConvGradRequest, ConvGrads, Distribution, Epilogue};
use crate::{
    AdadeltaStep, AdamStep, BinaryOp, DType, Error, HostData, Layout, ReduceOp, Result, SgdStep, UnaryOp, Window2d,
};
use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// Type-erased, shared storage: the `Backend::Storage` of the tensor's device, in a [`Slot`].
/// One allocation holds the count and the storage (views clone the `Arc`); `handles` reuses it.
pub(crate) type AnyStorage = Arc<dyn StorageSlot>;

/// A backend's storage, or nothing once its last tensor has gone (the cell is then kept for
/// reuse by `handles`).
pub(crate) struct Slot<S>(pub(crate) Option<S>);

/// What kiln needs of a storage cell without knowing its backend.
pub(crate) trait StorageSlot: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Drops the storage inside; returns the cell's type when it held one.
    fn clear(&mut self) -> Option<std::any::TypeId>;
}

impl<S: Send + Sync + 'static> StorageSlot for Slot<S> {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn clear(&mut self) -> Option<std::any::TypeId> {
        self.0.take().map(|_| std::any::TypeId::of::<Self>())
    }
}

/// A compute device. Cheap to clone. Two devices are equal when they wrap the same backend type
/// at the same location.
#[derive(Clone)]
pub struct Device(Arc<dyn DynBackend>);

impl Device {
    /// Wraps a backend value. This is how any crate, kiln's or a third party's, adds a device.
    pub fn new<B: Backend>(backend: B) -> Device {
        Device(Arc::new(backend))
    }

    /// The device's name (`"cpu"`, `"cuda:0"`).
    pub fn location(&self) -> String {
        self.0.location()
    }

    /// The backend inside, if it is a `B`.
    pub fn backend<B: Backend>(&self) -> Option<&B> {
        self.0.as_any().downcast_ref::<B>()
    }

    /// Waits for queued work on the device.
    pub fn synchronize(&self) -> Result<()> {
        self.0.synchronize()
    }

    pub(crate) fn dyn_backend(&self) -> &dyn DynBackend {
        &*self.0
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.as_any().type_id() == other.0.as_any().type_id() && self.location() == other.location())
    }
}
impl Eq for Device {}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Device({})", self.location())
    }
}
impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.location())
    }
}

/// The object-safe mirror of [`Backend`], implemented for every backend. Storage arguments are
/// downcast to the backend's storage type once per call.
#[allow(clippy::too_many_arguments)]
pub(crate) trait DynBackend: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn location(&self) -> String;
    fn upload(&self, data: &HostData) -> Result<AnyStorage>;
    fn download(&self, s: &AnyStorage, l: &Layout) -> Result<HostData>;
    fn fill(&self, len: usize, dtype: DType, value: f64) -> Result<AnyStorage>;
    fn copy_strided(&self, src: &AnyStorage, sl: &Layout, dst: &mut AnyStorage, dl: &Layout) -> Result<()>;
    fn contiguous(&self, s: &AnyStorage, l: &Layout) -> Result<Option<AnyStorage>>;
    fn cast(&self, s: &AnyStorage, l: &Layout, dtype: DType) -> Result<AnyStorage>;
    fn unary(&self, op: UnaryOp, s: &AnyStorage, l: &Layout) -> Result<AnyStorage>;
    fn binary(&self, op: BinaryOp, a: &AnyStorage, al: &Layout, b: &AnyStorage, bl: &Layout) -> Result<AnyStorage>;
    fn binary_scalar(&self, op: BinaryOp, s: &AnyStorage, l: &Layout, dtype: DType, v: f64) -> Result<AnyStorage>;
    fn where_cond(
        &self,
        c: &AnyStorage,
        cl: &Layout,
        t: &AnyStorage,
        tl: &Layout,
        f: &AnyStorage,
        fl: &Layout,
    ) -> Result<AnyStorage>;
    fn reduce(&self, op: ReduceOp, s: &AnyStorage, l: &Layout, dims: &[usize]) -> Result<AnyStorage>;
    fn matmul(&self, a: &AnyStorage, al: &Layout, b: &AnyStorage, bl: &Layout) -> Result<AnyStorage>;
    fn gather(&self, s: &AnyStorage, sl: &Layout, i: &AnyStorage, il: &Layout, dim: usize) -> Result<AnyStorage>;
    fn scatter_add(
        &self,
        d: &mut AnyStorage,
        dl: &Layout,
        i: &AnyStorage,
        il: &Layout,
        s: &AnyStorage,
        sl: &Layout,
        dim: usize,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn scatter_add_into_zeros(
        &self,
        dl: &Layout,
        dtype: DType,
        i: &AnyStorage,
        il: &Layout,
        s: &AnyStorage,
        sl: &Layout,
        dim: usize,
    ) -> Result<AnyStorage>;
    fn index_select(&self, s: &AnyStorage, sl: &Layout, i: &AnyStorage, il: &Layout, dim: usize) -> Result<AnyStorage>;
    fn random(&self, dist: Distribution, len: usize, dtype: DType, seed: u64) -> Result<AnyStorage>;
    fn adam_step(&self, step: &AdamStep, inputs: [(&AnyStorage, &Layout); 4]) -> Result<Option<[AnyStorage; 3]>>;
    fn adadelta_step(
        &self,
        step: &AdadeltaStep,
        inputs: [(&AnyStorage, &Layout); 4],
    ) -> Result<Option<[AnyStorage; 3]>>;
    fn sgd_step(&self, step: &SgdStep, inputs: [(&AnyStorage, &Layout); 3]) -> Result<Option<[AnyStorage; 2]>>;
    fn cross_entropy_rows(&self, x: (&AnyStorage, &Layout), t: (&AnyStorage, &Layout)) -> Result<Option<AnyStorage>>;
    fn cross_entropy_rows_backward(
        &self,
        x: (&AnyStorage, &Layout),
        t: (&AnyStorage, &Layout),
        g: (&AnyStorage, &Layout),
    ) -> Result<Option<AnyStorage>>;
    fn im2col(&self, x: &AnyStorage, l: &Layout, win: &Window2d) -> Result<Option<AnyStorage>>;
    fn col2im(&self, c: &AnyStorage, l: &Layout, dims: [usize; 4], win: &Window2d) -> Result<Option<AnyStorage>>;
    fn softmax_last(&self, x: &AnyStorage, l: &Layout, log: bool) -> Result<Option<AnyStorage>>;
    fn relu_backward(&self, y: (&AnyStorage, &Layout), g: (&AnyStorage, &Layout)) -> Result<Option<AnyStorage>>;
    fn linear(
        &self,
        x: (&AnyStorage, &Layout),
        w: (&AnyStorage, &Layout),
        epilogue: Epilogue<'_, AnyStorage>,
    ) -> Result<Option<AnyStorage>>;
    fn conv2d(
        &self,
        x: (&AnyStorage, &Layout),
        w: (&AnyStorage, &Layout),
        epilogue: Epilogue<'_, AnyStorage>,
        win: &Window2d,
    ) -> Result<Option<AnyStorage>>;
    fn conv2d_backward(
        &self,
        x: (&AnyStorage, &Layout),
        w: (&AnyStorage, &Layout),
        g: (&AnyStorage, &Layout),
        win: &Window2d,
        request: ConvGradRequest<'_, AnyStorage>,
    ) -> Result<Option<ConvGrads<AnyStorage>>>;
    fn max_pool2d_indices(&self, x: &AnyStorage, l: &Layout, win: &Window2d) -> Result<Option<AnyStorage>>;
    fn max_pool2d(&self, x: &AnyStorage, l: &Layout, win: &Window2d) -> Result<Option<[AnyStorage; 2]>>;
    fn synchronize(&self) -> Result<()>;
}

/// An optional operand as `b`'s storage.
fn get_opt<'a, B: Backend>(
    b: &B,
    s: Option<(&'a AnyStorage, &'a Layout)>,
) -> Result<Option<(&'a B::Storage, &'a Layout)>> {
    s.map(|(s, l)| Ok((get(b, s)?, l))).transpose()
}

/// The epilogue with its bias as `b`'s storage.
fn epilogue_of<'a, B: Backend>(b: &B, e: Epilogue<'a, AnyStorage>) -> Result<Epilogue<'a, B::Storage>> {
    Ok(Epilogue { bias: get_opt(b, e.bias)?, relu: e.relu })
}

fn get<'a, B: Backend>(b: &B, s: &'a AnyStorage) -> Result<&'a B::Storage> {
    s.as_any().downcast_ref::<Slot<B::Storage>>().and_then(|s| s.0.as_ref()).ok_or_else(|| foreign(b))
}

fn foreign<B: Backend>(b: &B) -> Error {
    Error::Backend {
        backend: b.location(),
        msg: format!(
            "received storage of another backend (expected {}); this is a bug in kiln, please report it",
            std::any::type_name::<B::Storage>()
        ),
    }
}

/// A backend's new storage, type-erased (in a reused cell when this thread has one).
fn erase<S: Send + Sync + 'static>(s: S) -> AnyStorage {
    crate::handles::storage(s)
}

/// Storage kiln has just created and holds the only handle to, as `b`'s storage, for writing.
fn get_mut<'a, B: Backend>(b: &B, s: &'a mut AnyStorage) -> Result<&'a mut B::Storage> {
    Arc::get_mut(s)
        .and_then(|s| s.as_any_mut().downcast_mut::<Slot<B::Storage>>())
        .and_then(|s| s.0.as_mut())
        .ok_or_else(|| foreign(b))
}

impl<B: Backend> DynBackend for B {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn location(&self) -> String {
        Backend::location(self)
    }
    fn upload(&self, data: &HostData) -> Result<AnyStorage> {
        Backend::upload(self, data).map(erase)
    }
    fn download(&self, s: &AnyStorage, l: &Layout) -> Result<HostData> {
        Backend::download(self, get(self, s)?, l)
    }
    fn fill(&self, len: usize, dtype: DType, value: f64) -> Result<AnyStorage> {
        Backend::fill(self, len, dtype, value).map(erase)
    }
    fn copy_strided(&self, src: &AnyStorage, sl: &Layout, dst: &mut AnyStorage, dl: &Layout) -> Result<()> {
        let src = get(self, src)?;
        let dst = get_mut(self, dst)?;
        Backend::copy_strided(self, src, sl, dst, dl)
    }
    fn contiguous(&self, s: &AnyStorage, l: &Layout) -> Result<Option<AnyStorage>> {
        Ok(Backend::contiguous(self, get(self, s)?, l)?.map(erase))
    }
    fn cast(&self, s: &AnyStorage, l: &Layout, dtype: DType) -> Result<AnyStorage> {
        Backend::cast(self, get(self, s)?, l, dtype).map(erase)
    }
    fn unary(&self, op: UnaryOp, s: &AnyStorage, l: &Layout) -> Result<AnyStorage> {
        Backend::unary(self, op, get(self, s)?, l).map(erase)
    }
    fn binary(&self, op: BinaryOp, a: &AnyStorage, al: &Layout, b: &AnyStorage, bl: &Layout) -> Result<AnyStorage> {
        Backend::binary(self, op, get(self, a)?, al, get(self, b)?, bl).map(erase)
    }
    fn binary_scalar(&self, op: BinaryOp, s: &AnyStorage, l: &Layout, dtype: DType, v: f64) -> Result<AnyStorage> {
        Backend::binary_scalar(self, op, get(self, s)?, l, dtype, v).map(erase)
    }
    fn where_cond(
        &self,
        c: &AnyStorage,
        cl: &Layout,
        t: &AnyStorage,
        tl: &Layout,
        f: &AnyStorage,
        fl: &Layout,
    ) -> Result<AnyStorage> {
        Backend::where_cond(self, get(self, c)?, cl, get(self, t)?, tl, get(self, f)?, fl).map(erase)
    }
    fn reduce(&self, op: ReduceOp, s: &AnyStorage, l: &Layout, dims: &[usize]) -> Result<AnyStorage> {
        Backend::reduce(self, op, get(self, s)?, l, dims).map(erase)
    }
    fn matmul(&self, a: &AnyStorage, al: &Layout, b: &AnyStorage, bl: &Layout) -> Result<AnyStorage> {
        Backend::matmul(self, get(self, a)?, al, get(self, b)?, bl).map(erase)
    }
    fn gather(&self, s: &AnyStorage, sl: &Layout, i: &AnyStorage, il: &Layout, dim: usize) -> Result<AnyStorage> {
        Backend::gather(self, get(self, s)?, sl, get(self, i)?, il, dim).map(erase)
    }
    fn scatter_add(
        &self,
        d: &mut AnyStorage,
        dl: &Layout,
        i: &AnyStorage,
        il: &Layout,
        s: &AnyStorage,
        sl: &Layout,
        dim: usize,
    ) -> Result<()> {
        let (i, s) = (get(self, i)?, get(self, s)?);
        let d = get_mut(self, d)?;
        Backend::scatter_add(self, d, dl, i, il, s, sl, dim)
    }
    fn scatter_add_into_zeros(
        &self,
        dl: &Layout,
        dtype: DType,
        i: &AnyStorage,
        il: &Layout,
        s: &AnyStorage,
        sl: &Layout,
        dim: usize,
    ) -> Result<AnyStorage> {
        Backend::scatter_add_into_zeros(self, dl, dtype, get(self, i)?, il, get(self, s)?, sl, dim).map(erase)
    }
    fn index_select(&self, s: &AnyStorage, sl: &Layout, i: &AnyStorage, il: &Layout, dim: usize) -> Result<AnyStorage> {
        Backend::index_select(self, get(self, s)?, sl, get(self, i)?, il, dim).map(erase)
    }
    fn random(&self, dist: Distribution, len: usize, dtype: DType, seed: u64) -> Result<AnyStorage> {
        Backend::random(self, dist, len, dtype, seed).map(erase)
    }
    fn adam_step(&self, step: &AdamStep, inputs: [(&AnyStorage, &Layout); 4]) -> Result<Option<[AnyStorage; 3]>> {
        let [p, g, m, v] = inputs;
        let typed = [(get(self, p.0)?, p.1), (get(self, g.0)?, g.1), (get(self, m.0)?, m.1), (get(self, v.0)?, v.1)];
        Ok(Backend::adam_step(self, step, typed)?.map(|out| out.map(erase)))
    }
    fn cross_entropy_rows(&self, x: (&AnyStorage, &Layout), t: (&AnyStorage, &Layout)) -> Result<Option<AnyStorage>> {
        let out = Backend::cross_entropy_rows(self, (get(self, x.0)?, x.1), (get(self, t.0)?, t.1))?;
        Ok(out.map(erase))
    }
    fn cross_entropy_rows_backward(
        &self,
        x: (&AnyStorage, &Layout),
        t: (&AnyStorage, &Layout),
        g: (&AnyStorage, &Layout),
    ) -> Result<Option<AnyStorage>> {
        let typed = ((get(self, x.0)?, x.1), (get(self, t.0)?, t.1), (get(self, g.0)?, g.1));
        Ok(Backend::cross_entropy_rows_backward(self, typed.0, typed.1, typed.2)?.map(erase))
    }
    fn adadelta_step(
        &self,
        step: &AdadeltaStep,
        inputs: [(&AnyStorage, &Layout); 4],
    ) -> Result<Option<[AnyStorage; 3]>> {
        let [p, g, v, u] = inputs;
        let typed = [(get(self, p.0)?, p.1), (get(self, g.0)?, g.1), (get(self, v.0)?, v.1), (get(self, u.0)?, u.1)];
        Ok(Backend::adadelta_step(self, step, typed)?.map(|out| out.map(erase)))
    }
    fn sgd_step(&self, step: &SgdStep, inputs: [(&AnyStorage, &Layout); 3]) -> Result<Option<[AnyStorage; 2]>> {
        let [p, g, b] = inputs;
        let typed = [(get(self, p.0)?, p.1), (get(self, g.0)?, g.1), (get(self, b.0)?, b.1)];
        Ok(Backend::sgd_step(self, step, typed)?.map(|out| out.map(erase)))
    }
    fn im2col(&self, x: &AnyStorage, l: &Layout, win: &Window2d) -> Result<Option<AnyStorage>> {
        Ok(Backend::im2col(self, get(self, x)?, l, win)?.map(erase))
    }
    fn col2im(&self, c: &AnyStorage, l: &Layout, dims: [usize; 4], win: &Window2d) -> Result<Option<AnyStorage>> {
        Ok(Backend::col2im(self, get(self, c)?, l, dims, win)?.map(erase))
    }
    fn softmax_last(&self, x: &AnyStorage, l: &Layout, log: bool) -> Result<Option<AnyStorage>> {
        Ok(Backend::softmax_last(self, get(self, x)?, l, log)?.map(erase))
    }
    fn relu_backward(&self, y: (&AnyStorage, &Layout), g: (&AnyStorage, &Layout)) -> Result<Option<AnyStorage>> {
        Ok(Backend::relu_backward(self, (get(self, y.0)?, y.1), (get(self, g.0)?, g.1))?.map(erase))
    }
    fn linear(
        &self,
        (x, xl): (&AnyStorage, &Layout),
        (w, wl): (&AnyStorage, &Layout),
        epilogue: Epilogue<'_, AnyStorage>,
    ) -> Result<Option<AnyStorage>> {
        let epilogue = epilogue_of(self, epilogue)?;
        let y = Backend::linear(self, (get(self, x)?, xl), (get(self, w)?, wl), epilogue)?;
        Ok(y.map(erase))
    }
    fn conv2d(
        &self,
        (x, xl): (&AnyStorage, &Layout),
        (w, wl): (&AnyStorage, &Layout),
        epilogue: Epilogue<'_, AnyStorage>,
        win: &Window2d,
    ) -> Result<Option<AnyStorage>> {
        let epilogue = epilogue_of(self, epilogue)?;
        let y = Backend::conv2d(self, (get(self, x)?, xl), (get(self, w)?, wl), epilogue, win)?;
        Ok(y.map(erase))
    }
    fn conv2d_backward(
        &self,
        (x, xl): (&AnyStorage, &Layout),
        (w, wl): (&AnyStorage, &Layout),
        (g, gl): (&AnyStorage, &Layout),
        win: &Window2d,
        request: ConvGradRequest<'_, AnyStorage>,
    ) -> Result<Option<ConvGrads<AnyStorage>>> {
        let relu_output = get_opt(self, request.relu_output)?;
        let request = ConvGradRequest { dx: request.dx, db: request.db, relu_output };
        let grads = Backend::conv2d_backward(
            self,
            (get(self, x)?, xl),
            (get(self, w)?, wl),
            (get(self, g)?, gl),
            win,
            request,
        )?;
        Ok(grads.map(|c| ConvGrads { dx: c.dx.map(erase), dw: erase(c.dw), db: c.db.map(erase) }))
    }
    fn max_pool2d_indices(&self, x: &AnyStorage, l: &Layout, win: &Window2d) -> Result<Option<AnyStorage>> {
        Ok(Backend::max_pool2d_indices(self, get(self, x)?, l, win)?.map(erase))
    }
    fn max_pool2d(&self, x: &AnyStorage, l: &Layout, win: &Window2d) -> Result<Option<[AnyStorage; 2]>> {
        Ok(Backend::max_pool2d(self, get(self, x)?, l, win)?.map(|out| out.map(erase)))
    }
    fn synchronize(&self) -> Result<()> {
        Backend::synchronize(self)
    }
}
