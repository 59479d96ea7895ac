//! When two results count as equal: `|x - y| <= max(rel * |x + y|, abs)`, with NaN and the
//! infinities required to match exactly. Presets per dtype.

use kiln_tensor::DType;

/// A tolerance pair for [`Tolerance::close`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Relative part, scaled by `|x + y|`.
    pub rel: f64,
    /// Absolute floor, for results near zero.
    pub abs: f64,
}

impl Tolerance {
    /// Exact equality (integers, masks, indices, copies).
    pub const EXACT: Tolerance = Tolerance { rel: 0.0, abs: 0.0 };

    /// The preset for results of `dtype` computed in one op.
    pub fn for_dtype(dtype: DType) -> Tolerance {
        match dtype {
            DType::F64 => Tolerance { rel: 1e-9, abs: 1e-12 },
            DType::F32 => Tolerance { rel: 5e-3, abs: 1e-5 },
            DType::F16 => Tolerance { rel: 1e-2, abs: 1e-3 },
            DType::BF16 => Tolerance { rel: 4e-2, abs: 1e-2 },
            _ => Tolerance::EXACT,
        }
    }

    /// This tolerance loosened by `factor` (for ops that accumulate many roundings).
    pub fn scaled(self, factor: f64) -> Tolerance {
        Tolerance { rel: self.rel * factor, abs: self.abs * factor }
    }

    /// True when `x` and `y` are equal under this tolerance.
    pub fn close(&self, x: f64, y: f64) -> bool {
        if x.is_nan() || y.is_nan() {
            return x.is_nan() && y.is_nan();
        }
        if x.is_infinite() || y.is_infinite() {
            return x == y;
        }
        (x - y).abs() <= (self.rel * (x + y).abs()).max(self.abs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        let t = Tolerance::for_dtype(DType::F32);
        assert!(t.close(1.0, 1.001));
        assert!(!t.close(1.0, 1.1));
        assert!(t.close(0.0, 5e-6));
        assert!(t.close(f64::NAN, f64::NAN) && !t.close(f64::NAN, 1.0));
        assert!(t.close(f64::INFINITY, f64::INFINITY) && !t.close(f64::INFINITY, f64::MAX));
        assert!(Tolerance::EXACT.close(3.0, 3.0) && !Tolerance::EXACT.close(3.0, 3.0000001));
    }
}
