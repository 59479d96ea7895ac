//! Creating tensors: constants, ranges, host data, seeded random numbers.

use crate::backend::Distribution;
use crate::{DType, Device, Error, HostData, Layout, Result, Shape, Tensor, WithDType};

impl Tensor {
    /// A tensor of `shape` with every element `value` (rounded to `dtype`).
    pub fn full(value: f64, shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let s = device.dyn_backend().fill(shape.checked_elem_count("full")?, dtype, value)?;
        Ok(Tensor::from_storage(s, Layout::contiguous(shape), dtype, device.clone(), None))
    }
    /// Zeros.
    pub fn zeros(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::full(0.0, shape, dtype, device)
    }
    /// Ones.
    pub fn ones(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::full(1.0, shape, dtype, device)
    }
    /// Zeros with this tensor's shape, dtype and device.
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(self.shape().clone(), self.dtype(), self.device())
    }
    /// Ones with this tensor's shape, dtype and device.
    pub fn ones_like(&self) -> Result<Tensor> {
        Tensor::ones(self.shape().clone(), self.dtype(), self.device())
    }

    /// `start, start + 1, ...` below `end`.
    pub fn arange(start: f64, end: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::arange_step(start, end, 1.0, dtype, device)
    }

    /// `start, start + step, ...` up to but excluding `end` (`step` may be negative).
    pub fn arange_step(start: f64, end: f64, step: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return Err(Error::invalid(
                "arange",
                format!("start {start}, end {end} and step {step} must be finite, step non-zero"),
            ));
        }
        let n = ((end - start) / step).ceil().max(0.0);
        let too_many =
            || Error::invalid("arange", format!("start {start}, end {end}, step {step} would make {n} elements"));
        if n > (isize::MAX / 8) as f64 {
            return Err(too_many());
        }
        let n = n as usize;
        let mut values = Vec::new();
        values.try_reserve_exact(n).map_err(|_| too_many())?;
        values.extend((0..n).map(|i| start + i as f64 * step));
        Tensor::from_host(HostData::from_f64_slice(dtype, &values), [n], device)
    }

    /// The `n x n` identity matrix.
    pub fn eye(n: usize, dtype: DType, device: &Device) -> Result<Tensor> {
        let count = Shape::new([n, n]).checked_elem_count("eye")?;
        let mut values = Vec::new();
        values
            .try_reserve_exact(count)
            .map_err(|_| Error::invalid("eye", format!("{n} x {n} is too large to allocate")))?;
        values.resize(count, 0.0);
        for i in 0..n {
            values[i * n + i] = 1.0;
        }
        Tensor::from_host(HostData::from_f64_slice(dtype, &values), [n, n], device)
    }

    /// A tensor owning `data`, checked against `shape`.
    pub fn from_vec<T: WithDType>(data: Vec<T>, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        Tensor::from_host(T::into_host(data), shape, device)
    }

    /// A tensor copied from `data`, checked against `shape`.
    pub fn from_slice<T: WithDType>(data: &[T], shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape, device)
    }

    /// A tensor from host data of any dtype, checked against `shape`.
    pub fn from_host(data: HostData, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        if data.len() != shape.elem_count() || shape.elem_count() == usize::MAX {
            return Err(Error::ElementCount { op: "from_vec", expected: shape.elem_count(), got: data.len(), shape });
        }
        let dtype = data.dtype();
        let s = device.dyn_backend().upload(&data)?;
        Ok(Tensor::from_storage(s, Layout::contiguous(shape), dtype, device.clone(), None))
    }

    /// Uniform in `[low, high)` from `seed`: the same numbers on every device and thread count.
    pub fn rand_uniform(
        low: f64,
        high: f64,
        shape: impl Into<Shape>,
        dtype: DType,
        seed: u64,
        device: &Device,
    ) -> Result<Tensor> {
        if low.partial_cmp(&high) != Some(std::cmp::Ordering::Less) {
            return Err(Error::invalid("rand_uniform", format!("low {low} must be below high {high}")));
        }
        Tensor::random(Distribution::Uniform { low, high }, shape.into(), dtype, seed, device)
    }

    /// Normal with `mean` and `std` from `seed`: the same numbers on every device and thread count.
    pub fn randn(
        mean: f64,
        std: f64,
        shape: impl Into<Shape>,
        dtype: DType,
        seed: u64,
        device: &Device,
    ) -> Result<Tensor> {
        if std.is_nan() || std < 0.0 || !mean.is_finite() {
            return Err(Error::invalid("randn", format!("std {std} must be non-negative and mean {mean} finite")));
        }
        Tensor::random(Distribution::Normal { mean, std }, shape.into(), dtype, seed, device)
    }

    fn random(dist: Distribution, shape: Shape, dtype: DType, seed: u64, device: &Device) -> Result<Tensor> {
        if !dtype.is_float() {
            return Err(Error::UnsupportedDType { op: "random", dtype, supported: "f32, f64, f16, bf16" });
        }
        let s = device.dyn_backend().random(dist, shape.checked_elem_count("random")?, dtype, seed)?;
        Ok(Tensor::from_storage(s, Layout::contiguous(shape), dtype, device.clone(), None))
    }
}
