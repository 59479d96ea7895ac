//! `Display` formats tensors like PyTorch's `print`.

use kiln::prelude::*;

#[test]
fn display_like_pytorch() -> kiln::Result<()> {
    let dev = kiln::device("cpu")?;
    let shown = [
        Tensor::from_vec(vec![1f32, 2., 3.], [3], &dev)?,
        Tensor::from_vec(vec![1.5f32, -2.25, 3.0, 4.125], [2, 2], &dev)?,
        Tensor::from_vec(vec![1e-6f32, 1.0, 1e5], [3], &dev)?,
        Tensor::arange(0.0, 24.0, DType::I64, &dev)?.reshape([2, 3, 4])?,
        Tensor::full(3.5, (), DType::F64, &dev)?,
        Tensor::zeros([0, 3], DType::F32, &dev)?,
        Tensor::arange(0.0, 2000.0, DType::F32, &dev)?.reshape([40, 50])?,
        Tensor::arange(0.0, 30.0, DType::F32, &dev)?.mul_scalar(0.5)?,
        Tensor::from_vec(vec![f32::NAN, f32::INFINITY, -1.0], [3], &dev)?.to_dtype(DType::BF16)?,
        Tensor::from_vec(vec![1u8, 0, 1], [3], &dev)?,
    ];
    let text: String = shown.iter().map(|t| format!("{t}\n")).collect();
    insta::assert_snapshot!(text);
    Ok(())
}
