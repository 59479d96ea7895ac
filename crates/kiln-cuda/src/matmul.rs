//! Matmul through cuBLAS (`cublasGemmStridedBatchedEx`): f32 and f64 in their own precision, f16
//! and bf16 on tensor cores with f32 accumulation, f32 on TF32 tensor cores only when switched
//! on. Transposed operands and batch dims that collapse to one stride (broadcast included) go to
//! cuBLAS as they are; any other view is copied to contiguous first.
#![allow(unsafe_code)]

use crate::backend::{cuda_error, CudaBackend};
use crate::nvrtc;
use crate::storage::{check_fits, CudaStorage};
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t};
use cudarc::driver::{DevicePtr, DevicePtrMut};
use kiln_tensor::backend::unsupported;
use kiln_tensor::{Backend, DType, Error, Layout, Result};
use std::sync::OnceLock;

/// How cuBLAS reads one operand's matrices.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Operand {
    /// Whether each matrix is stored column by column (a transposed view).
    transposed: bool,
    /// The step between rows (columns, when transposed), in elements.
    ld: usize,
    /// The step between batch matrices, in elements (0: one matrix shared by every batch).
    batch_stride: usize,
}

/// The operand a view of `[..., rows, cols]` already is, or `None` when it must be copied.
fn operand(layout: &Layout) -> Option<Operand> {
    let (d, s) = (layout.dims(), layout.strides());
    let r = d.len();
    let (rows, cols, rs, cs) = (d[r - 2], d[r - 1], s[r - 2], s[r - 1]);
    let (transposed, ld) = if (cols == 1 || cs == 1) && (rows == 1 || rs >= cols) {
        (false, if rows == 1 { cols } else { rs })
    } else if (rows == 1 || rs == 1) && (cols == 1 || cs >= rows) {
        (true, if cols == 1 { rows } else { cs })
    } else {
        return None;
    };
    // The batch dims must walk memory with one stride: merge them, ignoring dims of size 1.
    let mut batch: Option<(usize, usize)> = None; // (count, stride)
    for (&n, &st) in d[..r - 2].iter().zip(&s[..r - 2]).rev() {
        if n == 1 {
            continue;
        }
        batch = match batch {
            None => Some((n, st)),
            Some((count, stride)) if st == stride * count => Some((count * n, stride)),
            Some(_) => return None,
        };
    }
    Some(Operand { transposed, ld: ld.max(1), batch_stride: batch.map_or(0, |(_, st)| st) })
}

fn int(op: &'static str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::invalid(op, format!("{what} = {v} is beyond cuBLAS's 32-bit sizes")))
}

/// `a @ b` for `a` `[..., m, k]` and `b` `[..., k, n]` with equal batch dims.
pub(crate) fn matmul(dev: &CudaBackend, a: (&CudaStorage, &Layout), b: (&CudaStorage, &Layout)) -> Result<CudaStorage> {
    let ((sa, la), (sb, lb)) = (a, b);
    let dtype = sa.dtype;
    if !dtype.is_float() {
        return Err(unsupported("matmul", dtype, "f32, f64, f16, bf16"));
    }
    if sb.dtype != dtype {
        return Err(Error::DTypeMismatch { op: "matmul", lhs: dtype, rhs: sb.dtype, shapes: String::new() });
    }
    let (da, db) = (la.dims(), lb.dims());
    let r = da.len();
    if r < 2 || db.len() != r || da[..r - 2] != db[..r - 2] || da[r - 1] != db[r - 2] {
        return Err(Error::shape_mismatch("matmul", la.shape(), lb.shape()));
    }
    check_fits("matmul", sa, la)?;
    check_fits("matmul", sb, lb)?;
    let (m, k, n) = (da[r - 2], da[r - 1], db[r - 1]);
    let batches: usize = da[..r - 2].iter().product();
    let len = batches * m * n;
    if len == 0 || k == 0 {
        return dev.fill(len, dtype, 0.0);
    }
    // Views cuBLAS cannot read directly are copied first.
    let (mut ta, mut tb) = (None, None);
    let (sa, oa) = match operand(la) {
        Some(o) => (sa, (o, la.offset())),
        None => (&*ta.insert(dev.make_contiguous("matmul", sa, la)?), (operand_of_contiguous(m, k), 0)),
    };
    let (sb, ob) = match operand(lb) {
        Some(o) => (sb, (o, lb.offset())),
        None => (&*tb.insert(dev.make_contiguous("matmul", sb, lb)?), (operand_of_contiguous(k, n), 0)),
    };
    let mut out = dev.alloc("matmul", dtype, len)?;
    let blas_guard = blas(dev)?;
    // cuBLAS runs in the calling thread's current context, which must be this device's.
    dev.stream.context().bind_to_thread().map_err(|e| dev.driver_error("matmul", e))?;
    let Some(blas) = blas_guard.as_ref() else { return Err(cuda_error("matmul: cuBLAS handle missing")) };

    let (data_type, compute) = match dtype {
        DType::F32 if dev.tf32() => (cudaDataType_t::CUDA_R_32F, cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32),
        DType::F32 => (cudaDataType_t::CUDA_R_32F, cublasComputeType_t::CUBLAS_COMPUTE_32F),
        DType::F64 => (cudaDataType_t::CUDA_R_64F, cublasComputeType_t::CUBLAS_COMPUTE_64F),
        DType::F16 => (cudaDataType_t::CUDA_R_16F, cublasComputeType_t::CUBLAS_COMPUTE_32F),
        _ => (cudaDataType_t::CUDA_R_16BF, cublasComputeType_t::CUBLAS_COMPUTE_32F),
    };
    let (one64, zero64, one32, zero32) = (1.0f64, 0.0f64, 1.0f32, 0.0f32);
    let (alpha, beta): (*const std::ffi::c_void, *const std::ffi::c_void) = if dtype == DType::F64 {
        ((&one64 as *const f64).cast(), (&zero64 as *const f64).cast())
    } else {
        ((&one32 as *const f32).cast(), (&zero32 as *const f32).cast())
    };
    let op = |o: &Operand| if o.transposed { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
    let size = dtype.size_in_bytes();
    let stream = &dev.stream;
    let (va, vb) = (sa.buf.slice(oa.1 * size..), sb.buf.slice(ob.1 * size..));
    let (pa, _ra) = va.device_ptr(stream);
    let (pb, _rb) = vb.device_ptr(stream);
    let (pc, _rc) = out.buf.device_ptr_mut(stream);
    // Row-major C = A B is column-major C^T = B^T A^T: cuBLAS gets B first, with m and n swapped.
    // SAFETY: pointers, leading dims and batch strides describe views checked to lie inside
    // their storage; the output holds batches * m * n elements; alpha and beta live until the
    // call returns and have the compute type's width.
    unsafe {
        cudarc::cublas::result::gemm_strided_batched_ex(
            *blas.handle(),
            op(&ob.0),
            op(&oa.0),
            int("matmul", "n", n)?,
            int("matmul", "m", m)?,
            int("matmul", "k", k)?,
            alpha,
            pb as *const _,
            data_type,
            int("matmul", "ld", ob.0.ld)?,
            ob.0.batch_stride as i64,
            pa as *const _,
            data_type,
            int("matmul", "ld", oa.0.ld)?,
            oa.0.batch_stride as i64,
            beta,
            pc as *mut _,
            data_type,
            int("matmul", "n", n)?,
            (m * n) as i64,
            int("matmul", "batch count", batches)?,
            compute,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| {
        cuda_error(format!(
            "matmul {} @ {} ({dtype}) on cuda:{}: cuBLAS {e:?}",
            la.shape(),
            lb.shape(),
            dev.info.ordinal
        ))
    })?;
    drop(_rc);
    Ok(out)
}

fn operand_of_contiguous(rows: usize, cols: usize) -> Operand {
    Operand { transposed: false, ld: cols.max(1), batch_stride: rows * cols }
}

/// The cuBLAS handle, created on first use after finding the library.
fn blas(dev: &CudaBackend) -> Result<std::sync::MutexGuard<'_, Option<cudarc::cublas::CudaBlas>>> {
    let mut guard = dev.blas.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        load_cublas().map_err(cuda_error)?;
        let handle = cudarc::cublas::CudaBlas::new(dev.stream.clone())
            .map_err(|e| cuda_error(format!("cuBLAS does not start on cuda:{}: {e:?}", dev.info.ordinal)))?;
        *guard = Some(handle);
    }
    Ok(guard)
}

/// Finds cuBLAS where NVRTC is looked for (a toolkit, NVIDIA's pip wheels, the system), opens it
/// (and cuBLASLt, which it needs) globally so that cudarc's lookup by name succeeds; cudarc
/// itself would panic when it finds nothing.
fn load_cublas() -> std::result::Result<(), String> {
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let dirs = nvrtc::search_dirs();
            for dir in &dirs {
                for (blas, lt) in [("libcublas.so.13", "libcublasLt.so.13"), ("libcublas.so.12", "libcublasLt.so.12")] {
                    if dir.join(blas).is_file() {
                        if dir.join(lt).is_file() {
                            nvrtc::open_global(&dir.join(lt))?;
                        }
                        return nvrtc::open_global(&dir.join(blas));
                    }
                }
            }
            // SAFETY: only tries to open the library by name.
            if unsafe { cudarc::cublas::sys::is_culib_present() } {
                return Ok(());
            }
            let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            Err(format!(
                "cuBLAS (libcublas.so.13 or .so.12) not found; searched {}. Install a CUDA toolkit, or \
                 `pip install nvidia-cublas`, or set KILN_CUDA_LIB_DIR",
                searched.join(", ")
            ))
        })
        .clone()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn views_cublas_reads_directly() {
        let c = Layout::contiguous([4, 3, 5]);
        assert_eq!(operand(&c), Some(Operand { transposed: false, ld: 5, batch_stride: 15 }));
        // A transpose of the last two dims is read with op T.
        let t = c.permute("t", &[0, 2, 1]).unwrap();
        assert_eq!(operand(&t), Some(Operand { transposed: true, ld: 5, batch_stride: 15 }));
        // A weight broadcast over the batch has batch stride 0.
        let w = Layout::new([4, 3, 5].into(), vec![0, 5, 1], 0);
        assert_eq!(operand(&w), Some(Operand { transposed: false, ld: 5, batch_stride: 0 }));
        // Two batch dims that merge are one batch; a row slice keeps its row stride.
        let b = Layout::contiguous([2, 2, 3, 8]).narrow("t", 3, 0, 5, 1).unwrap();
        assert_eq!(operand(&b), Some(Operand { transposed: false, ld: 8, batch_stride: 24 }));
        // Batch dims that do not merge, and a stride-0 matrix dim, need a copy.
        let p = Layout::contiguous([2, 3, 4, 5]).permute("t", &[1, 0, 2, 3]).unwrap();
        assert_eq!(operand(&p), None);
        let z = Layout::new([3, 5].into(), vec![0, 1], 0);
        assert_eq!(operand(&z), None);
    }
}
