//! Moving data: dtype casts, device transfers, and reading values back to the host.

use crate::autograd::Op;
use crate::{DType, Device, Error, HostData, Result, Tensor, WithDType};

impl Tensor {
    /// The elements converted to `dtype` (floats to integers truncate toward zero and saturate).
    /// Gradients flow back through casts between float dtypes.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let s = self.backend().cast(self.storage(), self.layout(), dtype)?;
        let rec = (dtype.is_float() && self.dtype().is_float()).then(|| Op::Cast(self.clone()));
        Ok(self.result(s, self.shape().clone(), dtype, rec))
    }

    /// A copy on `device` (the tensor itself when it is already there). Not recorded for
    /// autograd: move parameters before building the graph.
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        Tensor::from_host(self.to_host()?, self.shape().clone(), device)
    }

    /// The logical elements, row-major, as host data of the tensor's dtype.
    pub fn to_host(&self) -> Result<HostData> {
        self.backend().download(self.storage(), self.layout())
    }

    /// The logical elements, row-major. `T` must match the dtype (cast first with `to_dtype`).
    pub fn to_vec<T: WithDType>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype() {
            return Err(Error::invalid(
                "to_vec",
                format!(
                    "the tensor holds {} but {} was asked for (read it as {} or convert with to_dtype first)",
                    self.dtype(),
                    T::DTYPE,
                    self.dtype()
                ),
            ));
        }
        let host = self.to_host()?;
        T::from_host(&host).map(|v| v.to_vec()).ok_or_else(|| Error::Backend {
            backend: self.device().location(),
            msg: format!("download returned {} data for a {} tensor", host.dtype(), self.dtype()),
        })
    }

    /// The elements as f64, whatever the dtype.
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        Ok(self.to_host()?.to_f64_vec())
    }

    /// The value of a one-element tensor.
    pub fn to_scalar<T: WithDType>(&self) -> Result<T> {
        if self.elem_count() != 1 {
            return Err(Error::invalid("to_scalar", format!("needs exactly one element, got shape {}", self.shape())));
        }
        Ok(self.to_vec::<T>()?[0])
    }

    /// A 2-D tensor as rows.
    pub fn to_vec2<T: WithDType>(&self) -> Result<Vec<Vec<T>>> {
        if self.rank() != 2 {
            return Err(Error::invalid("to_vec2", format!("needs 2 dims, got shape {}", self.shape())));
        }
        let cols = self.dims()[1];
        let v = self.to_vec::<T>()?;
        if cols == 0 {
            return Ok(vec![Vec::new(); self.dims()[0]]);
        }
        Ok(v.chunks(cols).map(|c| c.to_vec()).collect())
    }
}
