//! Every kind of bad input returns an `Err` whose message names the op and what was passed.
//! The messages are what users read, so insta pins them.

use kiln::prelude::*;
use kiln_conformance::reference::reference_device;

fn err<T: std::fmt::Debug>(r: kiln::Result<T>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn error_messages() -> kiln::Result<()> {
    let dev = kiln::device("cpu")?;
    let a = Tensor::zeros([2, 3], DType::F32, &dev)?;
    let b = Tensor::zeros([4, 3], DType::F32, &dev)?;
    let ids = Tensor::from_vec(vec![0i64, 7], [2], &dev)?;
    let other = Tensor::zeros([2, 3], DType::F32, &reference_device())?;
    let cases: Vec<(&str, String)> = vec![
        ("shape mismatch", err(a.add(&b))),
        ("matmul inner dims", err(a.matmul(&b))),
        ("dtype mismatch", err(a.add(&a.to_dtype(DType::F64)?))),
        ("device mismatch", err(a.mul(&other))),
        ("dim out of range", err(a.sum(2, false))),
        ("negative dim out of range", err(a.softmax(-3))),
        ("index out of range", err(a.index_select(1, &ids))),
        ("gather index out of range", err(a.gather(1, &Tensor::from_vec(vec![5i64; 2], [2, 1], &dev)?))),
        ("reshape of incompatible size", err(a.reshape([4, 2]))),
        ("view of a transposed tensor", err(a.t()?.view([6]))),
        ("from_vec with the wrong length", err(Tensor::from_vec(vec![1f32, 2., 3.], [2, 2], &dev))),
        ("unary op on integers", err(ids.exp())),
        ("where_cond with a float mask", err(a.where_cond(&a, &a))),
        ("narrow past the end", err(a.narrow(1, 2, 2))),
        ("not a permutation", err(a.permute(&[0, 0]))),
        ("cat with mismatched shapes", err(Tensor::cat(&[&a, &b.t()?], 0))),
        ("one_hot class out of range", err(ids.one_hot(5, DType::F32))),
        ("backward of a non-scalar", err(a.backward())),
        ("integer division by zero", err(ids.div(&Tensor::zeros([2], DType::I64, &dev)?))),
        ("to_vec with the wrong type", err(a.to_vec::<f64>())),
        ("broadcast_to an incompatible shape", err(b.broadcast_to([2, 3]))),
        ("unknown device", err(kiln::device("tpu:0"))),
    ];
    let text: String = cases.iter().map(|(what, msg)| format!("{what}:\n    {msg}\n")).collect();
    insta::assert_snapshot!(text);
    Ok(())
}

/// Outside the snapshot, because the words depend on the `cuda` feature and on the machine.
#[test]
fn cuda_errors_say_what_is_missing() {
    let err = kiln::device("cuda:0").map(|_| ()).unwrap_err().to_string();
    println!("{err}");
    assert!(err.starts_with("device 'cuda:0': "), "{err}");
    #[cfg(not(feature = "cuda"))]
    assert!(err.contains("--features cuda"), "{err}");
    #[cfg(feature = "cuda")]
    assert!(err.contains("CUDA"), "{err}");
}
