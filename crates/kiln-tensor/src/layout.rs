//! `Layout`: how a tensor's logical elements map onto its storage (shape, strides, offset).
//! Every view (reshape, permute, narrow, broadcast, ...) is a new `Layout` over the same storage.

use crate::{DimVec, Error, Result, Shape};
use smallvec::SmallVec;

/// Shape + strides (in elements) + offset of the first element in the storage.
/// A stride of 0 repeats an element (broadcasting).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    shape: Shape,
    strides: DimVec,
    offset: usize,
}

impl Layout {
    /// A row-major layout starting at offset 0.
    pub fn contiguous(shape: impl Into<Shape>) -> Self {
        let shape = shape.into();
        let strides = shape.contiguous_strides();
        Layout { shape, strides, offset: 0 }
    }

    /// A layout from explicit parts. The caller guarantees that every element it addresses lies in
    /// the storage it is used with.
    pub fn new(shape: Shape, strides: impl AsRef<[usize]>, offset: usize) -> Self {
        let strides = DimVec::from_slice(strides.as_ref());
        debug_assert_eq!(shape.rank(), strides.len());
        Layout { shape, strides, offset }
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    /// The dims of the shape.
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }
    /// Strides in elements, one per dim.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    /// Storage index of the first element.
    pub fn offset(&self) -> usize {
        self.offset
    }
    /// Number of logical elements.
    pub fn elem_count(&self) -> usize {
        self.shape.elem_count()
    }

    /// True when the elements are laid out row-major without gaps (dims of size 1 may have any stride).
    pub fn is_contiguous(&self) -> bool {
        if self.elem_count() == 0 {
            return true;
        }
        let mut acc = 1;
        for (&d, &s) in self.dims().iter().zip(&self.strides).rev() {
            if d != 1 && s != acc {
                return false;
            }
            acc *= d;
        }
        true
    }

    /// `Some((start, end))` storage range when the layout is contiguous.
    /// An empty layout gives `(0, 0)` whatever its offset, so slicing with it is always in bounds.
    pub fn contiguous_range(&self) -> Option<(usize, usize)> {
        if self.elem_count() == 0 {
            return Some((0, 0));
        }
        self.is_contiguous().then(|| (self.offset, self.offset + self.elem_count()))
    }

    /// One past the largest storage index this layout touches (0 when empty).
    pub fn storage_extent(&self) -> usize {
        if self.elem_count() == 0 {
            return 0;
        }
        self.offset + self.dims().iter().zip(&self.strides).map(|(&d, &s)| (d - 1) * s).sum::<usize>() + 1
    }

    /// Storage indices of the logical elements, in row-major order.
    pub fn offsets(&self) -> StridedOffsets<'_> {
        self.offsets_from(0)
    }

    /// Storage indices starting at logical element `start` (for splitting work across threads).
    pub fn offsets_from(&self, start: usize) -> StridedOffsets<'_> {
        let n = self.elem_count();
        let mut index = DimVec::from_elem(0, self.shape.rank());
        let mut next = self.offset;
        if start < n {
            let mut rem = start;
            for d in (0..index.len()).rev() {
                let size = self.dims()[d];
                index[d] = rem % size;
                rem /= size;
                next += index[d] * self.strides[d];
            }
        }
        StridedOffsets { layout: self, index, next, remaining: n.saturating_sub(start) }
    }

    /// Reshape without copying. `None` when the strides do not allow it (the caller then copies).
    pub fn reshape(&self, shape: &Shape) -> Option<Layout> {
        if self.is_contiguous() {
            return Some(Layout { shape: shape.clone(), strides: shape.contiguous_strides(), offset: self.offset });
        }
        // Group the old dims into runs that are mutually contiguous; a new dim may only split or
        // merge within one run. This is PyTorch's `view` rule.
        let old: SmallVec<[(usize, usize); 4]> =
            self.dims().iter().copied().zip(self.strides.iter().copied()).filter(|&(d, _)| d != 1).collect();
        let new = shape.dims();
        let mut strides = DimVec::from_elem(0, new.len());
        let (mut oi, mut ni) = (0, 0);
        while ni < new.len() || oi < old.len() {
            // skip size-1 new dims
            if ni < new.len() && new[ni] == 1 {
                strides[ni] = 1;
                ni += 1;
                continue;
            }
            if oi >= old.len() || ni >= new.len() {
                return None;
            }
            // take a run of old dims whose product equals a run of new dims
            let (mut op, mut np) = (old[oi].0, new[ni]);
            let (o_start, n_start) = (oi, ni);
            while op != np {
                if op < np {
                    oi += 1;
                    if oi >= old.len() {
                        return None;
                    }
                    op *= old[oi].0;
                } else {
                    ni += 1;
                    if ni >= new.len() {
                        return None;
                    }
                    np *= new[ni];
                }
            }
            // the old run must be contiguous within itself
            for k in o_start..oi {
                if old[k].1 != old[k + 1].1 * old[k + 1].0 {
                    return None;
                }
            }
            let mut acc = old[oi].1;
            for k in (n_start..=ni).rev() {
                strides[k] = acc;
                acc *= new[k];
            }
            oi += 1;
            ni += 1;
        }
        Some(Layout { shape: shape.clone(), strides, offset: self.offset })
    }

    /// Reorders the dims.
    pub fn permute(&self, op: &'static str, perm: &[usize]) -> Result<Layout> {
        let rank = self.shape.rank();
        let mut seen: SmallVec<[bool; 4]> = SmallVec::from_elem(false, rank);
        if perm.len() != rank || perm.iter().any(|&p| p >= rank || std::mem::replace(&mut seen[p], true)) {
            return Err(Error::invalid(
                op,
                format!("{perm:?} is not a permutation of the {rank} dims of a tensor of shape {}", self.shape),
            ));
        }
        let dims = perm.iter().map(|&p| self.dims()[p]).collect::<DimVec>();
        let strides = perm.iter().map(|&p| self.strides[p]).collect();
        Ok(Layout { shape: Shape::new(dims), strides, offset: self.offset })
    }

    /// Keeps `len` elements of `dim` starting at `start`, taking every `step`-th.
    pub fn narrow(&self, op: &'static str, dim: usize, start: usize, len: usize, step: usize) -> Result<Layout> {
        let size = self.dims()[dim];
        if step == 0 {
            return Err(Error::invalid(op, "step must be at least 1"));
        }
        let last = if len == 0 {
            Some(start)
        } else {
            (len - 1).checked_mul(step).and_then(|x| x.checked_add(start)).and_then(|x| x.checked_add(1))
        };
        if start > size || last.is_none_or(|last| last > size) {
            return Err(Error::invalid(
                op,
                format!(
                    "range start {start}, length {len}, step {step} does not fit in dim {dim} of size {size} (shape {})",
                    self.shape
                ),
            ));
        }
        let mut dims = DimVec::from_slice(self.dims());
        dims[dim] = len;
        let mut strides = self.strides.clone();
        let offset = if len == 0 { self.offset } else { self.offset + start * self.strides[dim] };
        // With one element the step is never taken (and stride * step could overflow).
        if len > 1 {
            strides[dim] *= step;
        }
        Ok(Layout { shape: Shape::new(dims), strides, offset })
    }

    /// Expands to `shape` following NumPy's rules, by giving stretched dims a stride of 0.
    pub fn broadcast_to(&self, op: &'static str, shape: &Shape) -> Result<Layout> {
        let (src, dst) = (self.dims(), shape.dims());
        let err = || Error::ShapeMismatch {
            op,
            lhs: self.shape.clone(),
            rhs: shape.clone(),
            hint: "; a dim can only be broadcast from size 1, and dims are aligned on the right".into(),
        };
        if src.len() > dst.len() {
            return Err(err());
        }
        let lead = dst.len() - src.len();
        let mut strides = DimVec::from_elem(0, dst.len());
        for i in 0..src.len() {
            if src[i] == dst[lead + i] {
                strides[lead + i] = self.strides[i];
            } else if src[i] == 1 {
                strides[lead + i] = 0;
            } else {
                return Err(err());
            }
        }
        Ok(Layout { shape: shape.clone(), strides, offset: self.offset })
    }

    /// Inserts a dim of size 1 at `dim` (0..=rank).
    pub fn unsqueeze(&self, dim: usize) -> Layout {
        let mut dims = DimVec::from_slice(self.dims());
        let mut strides = self.strides.clone();
        let stride = if dim < dims.len() { dims[dim] * strides[dim] } else { 1 };
        dims.insert(dim, 1);
        strides.insert(dim, stride);
        Layout { shape: Shape::new(dims), strides, offset: self.offset }
    }

    /// Removes the size-1 dim `dim`.
    pub fn squeeze(&self, dim: usize) -> Layout {
        let mut dims = DimVec::from_slice(self.dims());
        let mut strides = self.strides.clone();
        if dims[dim] == 1 {
            dims.remove(dim);
            strides.remove(dim);
        }
        Layout { shape: Shape::new(dims), strides, offset: self.offset }
    }
}

/// Iterator over the storage indices of a [`Layout`], in row-major logical order.
pub struct StridedOffsets<'a> {
    layout: &'a Layout,
    index: DimVec,
    next: usize,
    remaining: usize,
}

impl Iterator for StridedOffsets<'_> {
    type Item = usize;
    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let out = self.next;
        let dims = self.layout.dims();
        let strides = &self.layout.strides;
        for d in (0..self.index.len()).rev() {
            self.index[d] += 1;
            if self.index[d] < dims[d] {
                self.next += strides[d];
                break;
            }
            self.next -= (dims[d] - 1) * strides[d];
            self.index[d] = 0;
        }
        Some(out)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}
impl ExactSizeIterator for StridedOffsets<'_> {}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn offsets_follow_strides() {
        let l = Layout::contiguous([2, 3]).permute("t", &[1, 0]).unwrap();
        assert_eq!(l.offsets().collect::<Vec<_>>(), vec![0, 3, 1, 4, 2, 5]);
        assert_eq!(l.offsets_from(3).collect::<Vec<_>>(), vec![4, 2, 5]);
        let n = Layout::contiguous([10]).narrow("n", 0, 1, 3, 3).unwrap();
        assert_eq!(n.offsets().collect::<Vec<_>>(), vec![1, 4, 7]);
    }

    #[test]
    fn reshape_views_when_strides_allow() {
        let l = Layout::contiguous([4, 6]).narrow("n", 1, 0, 4, 1).unwrap(); // [4,4] strides [6,1]
        let r = l.reshape(&Shape::new([4, 2, 2])).unwrap();
        assert_eq!(r.strides(), &[6, 2, 1]);
        assert!(l.reshape(&Shape::new([16])).is_none());
        let t = Layout::contiguous([2, 3]).permute("t", &[1, 0]).unwrap();
        assert!(t.reshape(&Shape::new([6])).is_none());
        assert_eq!(t.reshape(&Shape::new([3, 1, 2])).unwrap().strides(), &[1, 1, 3]);
    }
}
