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
pub const FILES: [KernelFile; 8] = [
    KernelFile { name: "unary.cu", source: include_str!("../kernels/unary.cu") },
    KernelFile { name: "binary.cu", source: include_str!("../kernels/binary.cu") },
    KernelFile { name: "memory.cu", source: include_str!("../kernels/memory.cu") },
    KernelFile { name: "reduce.cu", source: include_str!("../kernels/reduce.cu") },
    KernelFile { name: "indexing.cu", source: include_str!("../kernels/indexing.cu") },
    KernelFile { name: "softmax.cu", source: include_str!("../kernels/softmax.cu") },
    KernelFile { name: "optim.cu", source: include_str!("../kernels/optim.cu") },
    KernelFile { name: "conv.cu", source: include_str!("../kernels/conv.cu") },
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

/// The file under `kernels/` that defines `kernel` (one of [`expected`]'s names).
pub fn file_of(kernel: &str) -> Option<&'static str> {
    static MAP: std::sync::OnceLock<std::collections::HashMap<String, &'static str>> = std::sync::OnceLock::new();
    MAP.get_or_init(|| expected().into_iter().map(|(file, name)| (name, file)).collect()).get(kernel).copied()
}

const REDUCE_OPS: [ReduceOp; 5] = [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min, ReduceOp::ArgMax, ReduceOp::ArgMin];

/// Every kernel the backend launches, with the file that defines it.
pub fn expected() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for dtype in FLOATS {
        out.extend(UnaryOp::ALL.iter().map(|&op| ("unary.cu", unary_kernel(op, dtype))));
        out.extend(BinaryOp::ALL.iter().map(|&op| ("binary.cu", binary_kernel(op, dtype))));
    }
    for dtype in INTS {
        let int_ops = BinaryOp::ALL.iter().filter(|op| op.supports_int());
        out.extend(int_ops.map(|&op| ("binary.cu", binary_kernel(op, dtype))));
    }
    for dtype in DType::ALL {
        out.extend([copy_kernel(dtype), fill_kernel(dtype), where_kernel(dtype)].map(|k| ("memory.cu", k)));
        out.extend(DType::ALL.iter().map(|&to| ("memory.cu", cast_kernel(dtype, to))));
        out.extend(REDUCE_OPS.iter().map(|&op| ("reduce.cu", reduce_kernel(op, dtype))));
        for index in [DType::I64, DType::U32] {
            out.push(("indexing.cu", indexing_kernel("gather", dtype, index)));
            out.push(("indexing.cu", indexing_kernel("index_select", dtype, index)));
            // No atomic add on bytes: scatter_add on u8 is declined (UnsupportedDType).
            if dtype != DType::U8 {
                out.push(("indexing.cu", indexing_kernel("scatter_add", dtype, index)));
            }
        }
    }
    for dtype in FLOATS {
        out.extend([false, true].map(|log| ("softmax.cu", softmax_kernel(log, dtype))));
        out.push(("optim.cu", adam_kernel(dtype)));
        out.extend(["im2col", "col2im", "max_pool2d_indices"].map(|f| ("conv.cu", conv_kernel(f, dtype))));
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
        let mut unique: Vec<&String> = names.iter().map(|(_, k)| k).collect();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "kernel names repeat");
    }
}
