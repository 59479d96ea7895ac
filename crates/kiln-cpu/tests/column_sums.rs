//! Sums over the leading dims of a small contiguous f32 tensor (a bias gradient, `dy.sum(0)`)
//! take a row-by-row path, which sums each column in f64 in row order and rounds once. The
//! general path, given the same values transposed, sums each column as a contiguous run: in
//! f32 partial sums of at most 10 elements each, added in f64 (`reduce.rs`, `sum_f32`), so its
//! results may differ in the last bits, within the bound `sum_f32` documents.

use kiln_tensor::{DType, Result, Tensor};

#[test]
fn leading_dim_sums_give_the_general_path_s_bits() -> Result<()> {
    let dev = kiln_cpu::cpu();
    for (shape, dims) in [(vec![32usize, 128], vec![0isize]), (vec![4, 8, 33], vec![0, 1]), (vec![200, 2], vec![0])] {
        let x = Tensor::randn(0.0, 100.0, shape.as_slice(), DType::F32, 11, &dev)?;
        let got: Vec<f32> = x.sum(dims.as_slice(), false)?.to_vec()?;
        // The same values through a transposed copy viewed back: not contiguous, so the
        // general path sums them.
        let last = shape.len() as isize - 1;
        let strided = x.transpose(0, last)?.contiguous()?.transpose(0, last)?;
        let general: Vec<f32> = strided.sum(dims.as_slice(), false)?.to_vec()?;
        let cols = got.len();
        let values: Vec<f32> = x.to_vec()?;
        let mut want = vec![0f64; cols];
        for row in values.chunks(cols) {
            for (w, &v) in want.iter_mut().zip(row) {
                *w += v as f64;
            }
        }
        let want: Vec<f32> = want.into_iter().map(|w| w as f32).collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "{shape:?} over {dims:?}: not the f64 row-order sums");
        // Each f32 value rounds at most 10 times, each time by at most 2^-24 of the sum of the
        // magnitudes; the final rounding to f32 adds at most a unit of the result.
        let magnitudes: Vec<f64> =
            (0..cols).map(|c| values.iter().skip(c).step_by(cols).map(|v| v.abs() as f64).sum()).collect();
        for ((g, w), m) in general.iter().zip(&want).zip(&magnitudes) {
            let bound = 10.0 * m * f64::from(f32::EPSILON) / 2.0 + f64::from(w.abs()) * f64::from(f32::EPSILON);
            assert!((*g as f64 - *w as f64).abs() <= bound, "{shape:?} over {dims:?}: general path {g} against {w}");
        }
    }
    Ok(())
}
