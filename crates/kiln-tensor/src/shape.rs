//! Shapes and dimension arithmetic.

use crate::{Error, Result};
use smallvec::SmallVec;
use std::fmt;

/// Dims or strides, stored inline up to rank 4 (NCHW) so that making a tensor or a view asks the
/// allocator for nothing (a training step's steady state makes no system allocations); higher
/// ranks spill to the heap.
pub type DimVec = SmallVec<[usize; 4]>;

/// The extent of each dimension of a tensor. Printed as `[2, 3]`.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(DimVec);

impl Shape {
    /// Builds a shape from its dims.
    pub fn new(dims: impl AsRef<[usize]>) -> Self {
        Shape(DimVec::from_slice(dims.as_ref()))
    }
    /// The dims.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    /// Number of dims.
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    /// Number of elements (1 for a scalar, 0 when any dim is 0); `usize::MAX` when the product
    /// overflows (use [`Shape::checked_elem_count`] to turn that into an error).
    pub fn elem_count(&self) -> usize {
        if self.0.contains(&0) {
            return 0;
        }
        self.0.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).unwrap_or(usize::MAX)
    }

    /// The number of elements, or an error naming `op` when it does not fit in memory's
    /// address space (more than `isize::MAX` bytes of f64).
    pub fn checked_elem_count(&self, op: &'static str) -> Result<usize> {
        let n = self.elem_count();
        if n > (isize::MAX as usize) / 8 {
            return Err(Error::invalid(op, format!("shape {self} has too many elements to allocate")));
        }
        Ok(n)
    }
    /// Row-major (C order) strides for this shape.
    pub fn contiguous_strides(&self) -> DimVec {
        let mut strides = DimVec::from_elem(0, self.0.len());
        let mut acc = 1;
        for (s, &d) in strides.iter_mut().zip(&self.0).rev() {
            *s = acc;
            acc *= d.max(1);
        }
        strides
    }

    /// Resolves a possibly negative dim (`-1` is the last) against this rank.
    pub fn dim(&self, op: &'static str, dim: isize) -> Result<usize> {
        resolve_dim(op, dim, self)
    }

    /// The shape both operands broadcast to, following NumPy's rules (align on the right; a dim
    /// of 1 stretches).
    pub fn broadcast_with(&self, op: &'static str, other: &Shape) -> Result<Shape> {
        let (a, b) = (self.dims(), other.dims());
        let rank = a.len().max(b.len());
        let mut out = DimVec::from_elem(0, rank);
        for i in 0..rank {
            let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
            let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
            out[i] = match (da, db) {
                (x, y) if x == y => x,
                (1, y) => y,
                (x, 1) => x,
                _ => {
                    return Err(Error::ShapeMismatch {
                        op,
                        lhs: self.clone(),
                        rhs: other.clone(),
                        hint: format!(
                            "; cannot broadcast: dim {i} of the result would need {da} == {db}, or one of them 1"
                        ),
                    })
                }
            };
        }
        Ok(Shape(out))
    }
}

/// Resolves a possibly negative dim against `shape`, naming `op` in the error.
pub(crate) fn resolve_dim(op: &'static str, dim: isize, shape: &Shape) -> Result<usize> {
    let rank = shape.rank() as isize;
    let d = if dim < 0 { dim + rank } else { dim };
    if d < 0 || d >= rank {
        return Err(Error::DimOutOfRange { op, dim, shape: shape.clone(), rank: shape.rank() });
    }
    Ok(d as usize)
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}
impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(DimVec::from_slice(d))
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape(DimVec::from_slice(&d))
    }
}
impl<const N: usize> From<&[usize; N]> for Shape {
    fn from(d: &[usize; N]) -> Self {
        Shape(DimVec::from_slice(d))
    }
}
impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Self {
        Shape(DimVec::from_slice(&d))
    }
}
impl From<&Vec<usize>> for Shape {
    fn from(d: &Vec<usize>) -> Self {
        Shape(DimVec::from_slice(d))
    }
}
impl From<DimVec> for Shape {
    fn from(d: DimVec) -> Self {
        Shape(d)
    }
}
impl From<&Shape> for Shape {
    fn from(s: &Shape) -> Self {
        s.clone()
    }
}
impl From<()> for Shape {
    fn from(_: ()) -> Self {
        Shape(DimVec::new())
    }
}
impl From<usize> for Shape {
    fn from(d: usize) -> Self {
        Shape(DimVec::from_slice(&[d]))
    }
}
