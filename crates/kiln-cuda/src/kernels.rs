//! The kernel sources, embedded from `kernels/*.cu`, and the one place that names each kernel:
//! `{family}_{op}_{dtype}`, with the op's name from kiln-tensor (`UnaryOp::name`,
//! `BinaryOp::name`) and the dtype's (`DType::as_str`). The `.cu` files stamp the same names with
//! macros; `cargo xtask kernels` checks that every name listed here is in the compiled code.

use kiln_tensor::{BinaryOp, DType, ReduceOp, UnaryOp};

/// One kernel file.
#[derive(Clone, Copy, Debug)]
pub struct KernelFile {
    /// The file name under `kernels/`.
    pub name: &'static str,
    /// Its source.
    pub source: &'static str,
}

/// What every kernel file starts with: the strided-view struct, index arithmetic, half types.
pub const COMMON: &str = include_str!("../kernels/common.cuh");

/// Every kernel file.
pub const FILES: [KernelFile; 9] = [
    KernelFile { name: "unary.cu", source: include_str!("../kernels/unary.cu") },
    KernelFile { name: "binary.cu", source: include_str!("../kernels/binary.cu") },
    KernelFile { name: "memory.cu", source: include_str!("../kernels/memory.cu") },
    KernelFile { name: "reduce.cu", source: include_str!("../kernels/reduce.cu") },
    KernelFile { name: "indexing.cu", source: include_str!("../kernels/indexing.cu") },
    KernelFile { name: "softmax.cu", source: include_str!("../kernels/softmax.cu") },
    KernelFile { name: "optim.cu", source: include_str!("../kernels/optim.cu") },
    KernelFile { name: "conv.cu", source: include_str!("../kernels/conv.cu") },
    KernelFile { name: "random.cu", source: include_str!("../kernels/random.cu") },
];

impl KernelFile {
    /// The source NVRTC compiles: the common header, then the file (with `#line` so that
    /// compiler messages name the file and line).
    pub fn program(&self) -> String {
        format!("{COMMON}\n#line 1 \"{}\"\n{}", self.name, self.source)
    }
}

const FLOATS: [DType; 4] = [DType::F32, DType::F64, DType::F16, DType::BF16];
const INTS: [DType; 3] = [DType::I64, DType::U32, DType::U8];

/// The kernel computing `op` on `dtype`.
pub fn unary_kernel(op: UnaryOp, dtype: DType) -> String {
    format!("unary_{}_{}", op.name(), dtype.as_str())
}

/// The kernel computing `op` on two operands of `dtype`.
pub fn binary_kernel(op: BinaryOp, dtype: DType) -> String {
    format!("binary_{}_{}", op.name(), dtype.as_str())
}

/// The strided-to-strided copy of `dtype` elements.
pub fn copy_kernel(dtype: DType) -> String {
    format!("copy_{}", dtype.as_str())
}

/// Fills contiguous storage of `dtype` with one value.
pub fn fill_kernel(dtype: DType) -> String {
    format!("fill_{}", dtype.as_str())
}

/// `cond ? a : b` on `dtype` operands.
pub fn where_kernel(dtype: DType) -> String {
    format!("where_{}", dtype.as_str())
}

/// Converts strided `from` elements to contiguous `to` elements.
pub fn cast_kernel(from: DType, to: DType) -> String {
    format!("cast_{}_{}", from.as_str(), to.as_str())
}

/// `op` over the last dim of a contiguous `[rows, cols]` input of `dtype`.
pub fn reduce_kernel(op: ReduceOp, dtype: DType) -> String {
    format!("reduce_{}_{}", op.name(), dtype.as_str())
}

/// `family` (`gather`, `index_select`, `scatter_add`) on `dtype` elements with `index` indices.
pub fn indexing_kernel(family: &str, dtype: DType, index: DType) -> String {
    format!("{family}_{}_{}", dtype.as_str(), index.as_str())
}

/// Softmax (or log-softmax) over the last dim of contiguous `[rows, cols]` `dtype` rows.
pub fn softmax_kernel(log: bool, dtype: DType) -> String {
    format!("{}_{}", if log { "log_softmax" } else { "softmax" }, dtype.as_str())
}

/// The fused Adam/AdamW update on `dtype` parameters.
pub fn adam_kernel(dtype: DType) -> String {
    format!("adam_{}", dtype.as_str())
}

/// `family` (`im2col`, `col2im`, `max_pool2d_indices`) on contiguous `[N, C, H, W]` `dtype` data.
pub fn conv_kernel(family: &str, dtype: DType) -> String {
    format!("{family}_{}", dtype.as_str())
}

/// Cross-entropy rows (or, with `backward`, their gradient) of `dtype` logits against `index`
/// classes.
pub fn cross_entropy_kernel(backward: bool, dtype: DType, index: DType) -> String {
    let family = if backward { "cross_entropy_backward" } else { "cross_entropy" };
    format!("{family}_{}_{}", dtype.as_str(), index.as_str())
}

/// The fused SGD update on `dtype` parameters.
pub fn sgd_kernel(dtype: DType) -> String {
    format!("sgd_{}", dtype.as_str())
}

/// Uniform random numbers of `dtype`, kiln's Philox stream.
pub fn random_uniform_kernel(dtype: DType) -> String {
    format!("random_uniform_{}", dtype.as_str())
}

/// One kernel the backend launches.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// The file under `kernels/` that defines it.
    pub file: &'static str,
    /// Its `extern "C"` name.
    pub name: String,
    /// The byte size of each parameter, in order: what the backend passes at launch (checked
    /// before every launch) and what `cargo xtask kernels` checks against the compiled PTX.
    pub params: Vec<usize>,
}

/// The kernel named `name`, if the backend has one.
pub fn lookup(name: &str) -> Option<&'static Kernel> {
    static MAP: std::sync::OnceLock<std::collections::HashMap<String, Kernel>> = std::sync::OnceLock::new();
    MAP.get_or_init(|| expected().into_iter().map(|k| (k.name.clone(), k)).collect()).get(name)
}

const REDUCE_OPS: [ReduceOp; 5] = [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min, ReduceOp::ArgMax, ReduceOp::ArgMin];

/// Parameter sizes: a device pointer, a `Strided` view, a `u64` count, a `u32` dim.
const P: usize = 8;
const VIEW: usize = 144;
const N: usize = 8;
const DIM: usize = 4;
/// `AdamArgs` and `SgdArgs` of `optim.cu`, `Window` of `conv.cu`.
const ADAM_ARGS: usize = 80;
const SGD_ARGS: usize = 48;
const WINDOW: usize = 112;

/// Every kernel the backend launches, with its file and parameters.
pub fn expected() -> Vec<Kernel> {
    let mut out = Vec::new();
    let mut add = |file: &'static str, name: String, params: &[usize]| {
        out.push(Kernel { file, name, params: params.to_vec() });
    };
    for dtype in FLOATS {
        for op in UnaryOp::ALL {
            add("unary.cu", unary_kernel(op, dtype), &[P, VIEW, P, N]);
        }
        for op in BinaryOp::ALL {
            add("binary.cu", binary_kernel(op, dtype), &[P, VIEW, P, VIEW, P, N]);
        }
    }
    for dtype in INTS {
        for &op in BinaryOp::ALL.iter().filter(|op| op.supports_int()) {
            add("binary.cu", binary_kernel(op, dtype), &[P, VIEW, P, VIEW, P, N]);
        }
    }
    for dtype in DType::ALL {
        add("memory.cu", copy_kernel(dtype), &[P, VIEW, P, VIEW, N]);
        add("memory.cu", fill_kernel(dtype), &[P, dtype.size_in_bytes(), N]);
        add("memory.cu", where_kernel(dtype), &[P, VIEW, P, VIEW, P, VIEW, P, N]);
        for &to in DType::ALL.iter() {
            add("memory.cu", cast_kernel(dtype, to), &[P, VIEW, P, N]);
        }
        for &op in REDUCE_OPS.iter() {
            add("reduce.cu", reduce_kernel(op, dtype), &[P, P, N, N]);
        }
        for index in [DType::I64, DType::U32] {
            add("indexing.cu", indexing_kernel("gather", dtype, index), &[P, VIEW, P, VIEW, DIM, P, N, P]);
            add("indexing.cu", indexing_kernel("index_select", dtype, index), &[P, VIEW, P, VIEW, VIEW, DIM, P, N, P]);
            // No atomic add on bytes: scatter_add on u8 is declined (UnsupportedDType).
            if dtype != DType::U8 {
                add(
                    "indexing.cu",
                    indexing_kernel("scatter_add", dtype, index),
                    &[P, VIEW, P, VIEW, P, VIEW, DIM, N, P],
                );
            }
        }
    }
    for dtype in FLOATS {
        for log in [false, true] {
            add("softmax.cu", softmax_kernel(log, dtype), &[P, P, N, N]);
        }
        for index in [DType::I64, DType::U32] {
            add("softmax.cu", cross_entropy_kernel(false, dtype, index), &[P, P, P, N, N, P]);
            add("softmax.cu", cross_entropy_kernel(true, dtype, index), &[P, P, P, P, N, N]);
        }
        add("optim.cu", adam_kernel(dtype), &[P, P, P, P, P, P, P, ADAM_ARGS, N]);
        add("optim.cu", sgd_kernel(dtype), &[P, P, P, P, P, SGD_ARGS, N]);
        add("random.cu", random_uniform_kernel(dtype), &[P, N, 8, 8, 8, 8]);
        for family in ["im2col", "col2im", "max_pool2d_indices"] {
            add("conv.cu", conv_kernel(family, dtype), &[P, P, WINDOW]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new `UnaryOp` or `BinaryOp` without a kernel fails here, before any GPU sees it: each
    /// op's name must be an entry of its file's op table.
    #[test]
    fn every_op_has_an_entry_in_its_kernel_file() {
        let unary = FILES[0].source;
        for op in UnaryOp::ALL {
            assert!(unary.contains(&format!("X({}, ", op.name())), "unary.cu has no kernel for {}", op.name());
        }
        let binary = FILES[1].source;
        for op in BinaryOp::ALL {
            let entry =
                if op == BinaryOp::Pow { "KILN_ARITH_NATIVE(pow, ".to_string() } else { format!("X({}, ", op.name()) };
            assert!(binary.contains(&entry), "binary.cu has no kernel for {}", op.name());
        }
        let names = expected();
        let mut unique: Vec<&String> = names.iter().map(|k| &k.name).collect();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "kernel names repeat");
    }
}
