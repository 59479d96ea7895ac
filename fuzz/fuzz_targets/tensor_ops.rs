//! A tensor-op interpreter: the input bytes decode into a program of up to 12 ops (creation on
//! random shapes and dtypes, element-wise ops, reductions, matmul, views, indexing, casts,
//! softmax, concatenation) run side by side on the CPU backend and the reference oracle. Every
//! call must return Ok or Err without panicking, both devices must agree on which, and Ok
//! results must agree in value (`kiln_conformance::compare`, the suite's tolerances).
#![no_main]

use kiln_conformance::reference::reference_device;
use kiln_tensor::{BinaryOp, DType, Device, Result, Tensor, UnaryOp};
use libfuzzer_sys::fuzz_target;

struct Program<'a>(&'a [u8]);

impl Program<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    /// A number in `0..n` (n >= 1).
    fn below(&mut self, n: usize) -> Option<usize> {
        Some(self.byte()? as usize % n)
    }
    /// A dim index, sometimes negative, sometimes out of range.
    fn dim(&mut self) -> Option<isize> {
        Some(self.byte()? as i8 as isize % 5)
    }
    fn dims(&mut self) -> Option<Vec<usize>> {
        let rank = self.below(4)?;
        (0..rank).map(|_| self.below(5)).collect()
    }
}

const DTYPES: [DType; 5] = [DType::F32, DType::F64, DType::I64, DType::U8, DType::F16];

/// One step of the program on one device, given the stack of that device's tensors.
fn step(op: u8, p: &mut Program, stack: &[Tensor], dev: &Device) -> Option<Result<Tensor>> {
    let pick = |p: &mut Program| -> Option<&Tensor> { stack.get(p.below(stack.len().max(1))?) };
    Some(match op % 14 {
        0 => {
            let (dims, dtype, seed) = (p.dims()?, DTYPES[p.below(DTYPES.len())?], p.byte()? as u64);
            Tensor::rand_uniform(-4.0, 4.0, dims, DType::F64, seed, dev).and_then(|t| t.to_dtype(dtype))
        }
        1 => pick(p)?.unary(UnaryOp::ALL[p.below(UnaryOp::ALL.len())?]),
        2 => {
            let (a, op) = (pick(p)?.clone(), BinaryOp::ALL[p.below(BinaryOp::ALL.len())?]);
            a.binary(op, pick(p)?)
        }
        3 => {
            let (t, dim, keep) = (pick(p)?, p.dim()?, p.byte()? % 2 == 0);
            match p.below(5)? {
                0 => t.sum(dim, keep),
                1 => t.max(dim, keep),
                2 => t.min(dim, keep),
                3 => t.argmax(dim, keep),
                _ => t.sum((), keep),
            }
        }
        4 => pick(p)?.clone().matmul(pick(p)?),
        5 => pick(p)?.transpose(p.dim()?, p.dim()?),
        6 => pick(p)?.narrow(p.dim()?, p.below(4)?, p.below(4)?),
        7 => pick(p)?.reshape(p.dims()?),
        8 => pick(p)?.broadcast_to(p.dims()?),
        9 => {
            let (t, dim) = (pick(p)?.clone(), p.dim()?);
            let ids: Vec<i64> = (0..p.below(4)?).map(|_| p.byte().map_or(0, |b| b as i8 as i64 % 6)).collect();
            let n = ids.len();
            Tensor::from_vec(ids, [n], dev).and_then(|ids| t.index_select(dim, &ids))
        }
        10 => {
            let (t, dim) = (pick(p)?.clone(), p.dim()?);
            pick(p)?.to_dtype(DType::I64).and_then(|i| i.binary_scalar(BinaryOp::Maximum, 0.0)).and_then(|i| t.gather(dim, &i))
        }
        11 => {
            let (c, a) = (pick(p)?.clone(), pick(p)?.clone());
            c.to_dtype(DType::U8).and_then(|c| c.where_cond(&a, pick(p).unwrap_or(&a)))
        }
        12 => {
            let (t, dim) = (pick(p)?, p.dim()?);
            if p.byte()? % 2 == 0 {
                t.softmax(dim)
            } else {
                t.to_dtype(DTYPES[p.below(DTYPES.len())?])
            }
        }
        _ => {
            let (a, dim) = (pick(p)?.clone(), p.dim()?);
            Tensor::cat(&[&a, pick(p)?], dim)
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let (cpu, reference) = (kiln_cpu::cpu(), reference_device());
    let (mut on_cpu, mut on_ref): (Vec<Tensor>, Vec<Tensor>) = (Vec::new(), Vec::new());
    let mut program = Program(data);
    for _ in 0..12 {
        let Some(op) = program.byte() else { break };
        // Both devices decode the same bytes.
        let saved = program.0;
        let Some(got) = step(op, &mut program, &on_cpu, &cpu) else { break };
        program.0 = saved;
        let Some(want) = step(op, &mut program, &on_ref, &reference) else { break };
        match (got, want) {
            (Ok(g), Ok(w)) => {
                // The conformance suite's per-dtype tolerances (integers exact; NaN and infinities
                // must match exactly).
                if let Err(e) = kiln_conformance::compare(&g, &w, None) {
                    panic!("op {} gave different results: {e}", op % 14);
                }
                // Both go on with the CPU's values, so that rounding differences within the
                // tolerance cannot grow through a chain of ops into a false alarm.
                let Ok(w) = g.to_device(&reference) else { break };
                on_cpu.push(g);
                on_ref.push(w);
            }
            (Err(_), Err(_)) => {}
            (Ok(_), Err(e)) => panic!("op {}: the reference errs ({e}) but the CPU backend returned Ok", op % 14),
            (Err(e), Ok(_)) => panic!("op {}: the CPU backend errs ({e}) but the reference returned Ok", op % 14),
        }
    }
});
