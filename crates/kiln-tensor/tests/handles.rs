//! Tensor handles and storage cells are reused after a drop (`handles.rs`): a reused one must
//! hold the new tensor only, and a view must keep its storage alive when its base goes.

#![allow(clippy::unwrap_used)]
// Tests: a failed unwrap is a failed test, with its message.

use kiln_tensor::{DType, Tensor};

#[test]
fn reused_handles_hold_the_new_tensor_only() {
    let dev = kiln_cpu::cpu();
    for round in 0..50 {
        let a = Tensor::from_vec(vec![1f32, 2., 3.], [3], &dev).unwrap();
        let view = a.reshape([1, 3]).unwrap();
        drop(a); // its handle is reused below; the storage lives on in the view
        let b = Tensor::full(round as f64, [2], DType::F64, &dev).unwrap();
        let c = view.exp().unwrap();
        drop(c.clone());
        assert_eq!(view.to_vec::<f32>().unwrap(), vec![1., 2., 3.]);
        assert_eq!(b.to_vec::<f64>().unwrap(), vec![round as f64; 2]);
        assert_eq!(c.dims(), &[1, 3]);
        assert!(!c.shares_storage_with(&view));
        assert!(view.id() != b.id() && b.id() != c.id() && view.id() != c.id());
    }
}

#[test]
fn tensors_dropped_on_other_threads_stay_correct() {
    let dev = kiln_cpu::cpu();
    let made: Vec<Tensor> = (0..100).map(|i| Tensor::full(i as f64, [4], DType::F32, &dev).unwrap()).collect();
    std::thread::spawn(move || drop(made)).join().unwrap();
    let again: Vec<Tensor> = (0..100).map(|i| Tensor::full(i as f64, [4], DType::F32, &dev).unwrap()).collect();
    for (i, t) in again.iter().enumerate() {
        assert_eq!(t.to_vec::<f32>().unwrap(), vec![i as f32; 4]);
    }
}
