//! The test harness: random inputs with views, running one case on both devices, comparing,
//! and the report.

use crate::reference::reference_device;
use crate::Tolerance;
use kiln_tensor::random::sample;
use kiln_tensor::{DType, Device, Distribution, Error, HostData, Result, Tensor};

/// How an input tensor is laid out in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Row-major, offset 0.
    Contiguous,
    /// The last two dims transposed (rank >= 2).
    Transposed,
    /// Every other element of the last dim of a twice-as-wide base.
    Strided,
    /// A size-1 first dim broadcast to the full size (stride 0).
    Broadcast,
    /// Rows 1.. of a base with two extra rows in the first dim (non-zero offset).
    Offset,
}

impl View {
    /// Every view.
    pub const ALL: [View; 5] = [View::Contiguous, View::Transposed, View::Strided, View::Broadcast, View::Offset];

    /// Whether this view can produce `shape`.
    pub fn fits(self, shape: &[usize]) -> bool {
        match self {
            View::Contiguous => true,
            View::Transposed => shape.len() >= 2,
            View::Strided | View::Broadcast | View::Offset => !shape.is_empty(),
        }
    }

    /// The shape of the storage this view is taken from.
    pub fn base_shape(self, shape: &[usize]) -> Vec<usize> {
        let mut s = shape.to_vec();
        let r = s.len();
        match self {
            View::Contiguous => {}
            View::Transposed => s.swap(r - 2, r - 1),
            View::Strided => s[r - 1] *= 2,
            View::Broadcast => s[0] = 1,
            View::Offset => s[0] += 2,
        }
        s
    }

    /// Takes the view of logical `shape` from `base` (of [`View::base_shape`]).
    pub fn apply(self, base: &Tensor, shape: &[usize]) -> Result<Tensor> {
        match self {
            View::Contiguous => Ok(base.clone()),
            View::Transposed => base.transpose(-2, -1),
            View::Strided => {
                let n = shape[shape.len() - 1];
                base.slice(-1, 0, 2 * n, 2)
            }
            View::Broadcast => base.broadcast_to(shape),
            View::Offset => base.narrow(0, 1, shape[0]),
        }
    }
}

/// One input of a case: logical shape, dtype, value range and view.
#[derive(Clone, Debug)]
pub struct Input {
    /// Logical shape (after the view).
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: DType,
    /// Values are drawn uniformly from `[low, high)` (rounded to integers for integer dtypes).
    pub range: (f64, f64),
    /// Memory layout.
    pub view: View,
    /// Fixed values (for index tensors), used instead of random ones.
    pub values: Option<Vec<f64>>,
}

impl Input {
    /// A random input in `range`.
    pub fn new(shape: &[usize], dtype: DType, range: (f64, f64), view: View) -> Input {
        Input { shape: shape.to_vec(), dtype, range, view, values: None }
    }
    /// An input with given values (contiguous).
    pub fn values(shape: &[usize], dtype: DType, values: Vec<f64>) -> Input {
        Input { shape: shape.to_vec(), dtype, range: (0.0, 1.0), view: View::Contiguous, values: Some(values) }
    }
}

/// Counts and failures of a run.
#[derive(Debug, Default)]
pub struct Report {
    /// Cases that matched the oracle.
    pub passed: usize,
    /// Cases the backend declined with `UnsupportedDType`.
    pub unsupported: Vec<String>,
    /// Gradient checks that passed.
    pub grad_checks: usize,
    /// What failed, one line each.
    pub failures: Vec<String>,
}

/// State for running cases against one device.
pub struct Ctx {
    /// The device under test.
    pub dut: Device,
    /// The oracle.
    pub reference: Device,
    /// The run's seed (printed on failure; `KILN_SEED` replays it).
    pub seed: u64,
    counter: u64,
    /// What happened.
    pub report: Report,
}

impl Ctx {
    /// A context for `dut` with `seed`.
    pub fn new(dut: Device, seed: u64) -> Ctx {
        Ctx { dut, reference: reference_device(), seed, counter: 0, report: Report::default() }
    }

    /// Fresh values for `input` (a new stream per call).
    pub fn values(&mut self, input: &Input) -> Vec<f64> {
        if let Some(v) = &input.values {
            return v.clone();
        }
        self.counter += 1;
        let base: usize = input.view.base_shape(&input.shape).iter().product();
        let (low, high) = input.range;
        let raw = sample(
            Distribution::Uniform { low, high },
            base,
            self.seed ^ self.counter.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        if input.dtype.is_int() {
            raw.into_iter().map(f64::floor).collect()
        } else {
            raw
        }
    }

    /// Builds `input` on `device` from `values` (the base's elements).
    pub fn build(input: &Input, values: &[f64], device: &Device) -> Result<Tensor> {
        let base_shape = input.view.base_shape(&input.shape);
        let base = Tensor::from_host(HostData::from_f64_slice(input.dtype, values), base_shape, device)?;
        input.view.apply(&base, &input.shape)
    }

    /// Runs `f` on the device under test and on the oracle with the same inputs and compares.
    /// Also checks that `f` left its inputs unchanged (clone invariance).
    pub fn check(
        &mut self,
        name: String,
        inputs: &[Input],
        tol: Option<Tolerance>,
        f: impl Fn(&[Tensor]) -> Result<Tensor>,
    ) {
        let values: Vec<Vec<f64>> = inputs.iter().map(|i| self.values(i)).collect();
        let outcome = (|| -> std::result::Result<bool, String> {
            let build = |dev: &Device| -> Result<Vec<Tensor>> {
                inputs.iter().zip(&values).map(|(i, v)| Ctx::build(i, v, dev)).collect()
            };
            let dut_in = build(&self.dut).map_err(|e| format!("building inputs: {e}"))?;
            let ref_in = build(&self.reference).map_err(|e| format!("building reference inputs: {e}"))?;
            let before: Vec<Vec<f64>> =
                dut_in.iter().map(|t| t.to_f64_vec()).collect::<Result<_>>().map_err(|e| e.to_string())?;
            let got = f(&dut_in);
            let want = f(&ref_in);
            let after: Vec<Vec<f64>> =
                dut_in.iter().map(|t| t.to_f64_vec()).collect::<Result<_>>().map_err(|e| e.to_string())?;
            if before.iter().zip(&after).any(|(b, a)| !same_bits(b, a)) {
                return Err("an input changed: the op wrote into storage it shares with its input".into());
            }
            match (got, want) {
                (Err(Error::UnsupportedDType { .. }), Ok(_)) => Ok(false),
                (Ok(g), Ok(w)) => compare(&g, &w, tol).map(|_| true),
                (Err(g), Err(w)) if std::mem::discriminant(&g) == std::mem::discriminant(&w) => Ok(true),
                (Err(g), Err(w)) => Err(format!("both sides error, but differently: backend '{g}', oracle '{w}'")),
                (Ok(g), Err(e)) => Err(format!("the oracle errors ({e}) but the backend returned {g:?}")),
                (Err(e), Ok(_)) => Err(format!("the backend errors: {e}")),
            }
        })();
        match outcome {
            Ok(true) => self.report.passed += 1,
            Ok(false) => self.report.unsupported.push(name),
            Err(msg) => self.report.failures.push(format!("{name}: {msg}")),
        }
    }
}

impl Ctx {
    /// Runs `f` on the device under test and compares with fixed expected values.
    pub fn check_against(
        &mut self,
        name: String,
        inputs: &[Input],
        want: &[f64],
        tol: Option<Tolerance>,
        f: impl Fn(&[Tensor]) -> Result<Tensor>,
    ) {
        let values: Vec<Vec<f64>> = inputs.iter().map(|i| self.values(i)).collect();
        let outcome = (|| -> std::result::Result<bool, String> {
            let ts: Vec<Tensor> = inputs
                .iter()
                .zip(&values)
                .map(|(i, v)| Ctx::build(i, v, &self.dut))
                .collect::<Result<_>>()
                .map_err(|e| e.to_string())?;
            let got = match f(&ts) {
                Err(Error::UnsupportedDType { .. }) => return Ok(false),
                other => other.map_err(|e| format!("the backend errors: {e}"))?,
            };
            let g = got.to_f64_vec().map_err(|e| e.to_string())?;
            let tol = tol.unwrap_or(Tolerance::for_dtype(got.dtype()));
            match (0..want.len()).find(|&i| g.get(i).is_none_or(|&x| !tol.close(x, want[i]))) {
                Some(i) => Err(format!(
                    "element {i}: got {:?}, expected {} (tolerance rel {}, abs {})",
                    g.get(i),
                    want[i],
                    tol.rel,
                    tol.abs
                )),
                None => Ok(true),
            }
        })();
        match outcome {
            Ok(true) => self.report.passed += 1,
            Ok(false) => self.report.unsupported.push(name),
            Err(msg) => self.report.failures.push(format!("{name}: {msg}")),
        }
    }
}

fn same_bits(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

/// Compares a backend result with the oracle's: dtype, shape, then values under `tol` (the
/// dtype's preset when `None`).
pub fn compare(got: &Tensor, want: &Tensor, tol: Option<Tolerance>) -> std::result::Result<(), String> {
    if got.dtype() != want.dtype() || got.shape() != want.shape() {
        return Err(format!("got {} {}, expected {} {}", got.dtype(), got.shape(), want.dtype(), want.shape()));
    }
    let tol = tol.unwrap_or_else(|| Tolerance::for_dtype(got.dtype()));
    // The storage a backend returned must hold the dtype the tensor claims.
    for (t, side) in [(got, "backend"), (want, "oracle")] {
        let host = t.to_host().map_err(|e| e.to_string())?;
        if host.dtype() != t.dtype() {
            return Err(format!("the {side} returned {} data for a {} tensor", host.dtype(), t.dtype()));
        }
    }
    let (g, w) = (got.to_f64_vec().map_err(|e| e.to_string())?, want.to_f64_vec().map_err(|e| e.to_string())?);
    let bad: Vec<usize> = (0..g.len()).filter(|&i| !tol.close(g[i], w[i])).collect();
    if let Some(&i) = bad.first() {
        return Err(format!(
            "{} of {} elements differ; first at flat index {i}: got {}, expected {} (tolerance rel {}, abs {})",
            bad.len(),
            g.len(),
            g[i],
            w[i],
            tol.rel,
            tol.abs
        ));
    }
    Ok(())
}
