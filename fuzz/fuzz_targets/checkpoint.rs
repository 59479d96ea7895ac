//! Loading a file into a model: `checkpoint::load` strict and non-strict, and the training
//! checkpoint loader, on arbitrary bytes. Ok or Err, never a panic; a strict load that succeeds
//! left every parameter with its shape and dtype.
#![no_main]

use kiln_nn::optim::{Adam, AdamConfig};
use kiln_nn::{checkpoint, resume, Activation, Dropout, LinearConfig, Module, Sequential};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dev = kiln_cpu::cpu();
    let model = || -> kiln_tensor::Result<Sequential> {
        Ok(Sequential::new()
            .add(LinearConfig::new(4, 3).init(&dev)?)
            .add(Activation::ReLU)
            .add(Dropout::new(0.5)?)
            .add(LinearConfig::new(3, 2).init(&dev)?))
    };
    let Ok(model) = model() else { return };
    let shapes: Vec<_> = model.parameters().iter().map(|(n, p)| (n.clone(), p.as_tensor().shape().clone())).collect();
    let path = std::env::temp_dir().join(format!("kiln-fuzz-checkpoint-{}", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    for strict in [true, false] {
        let _ = checkpoint::load(&model, &path, strict);
        let after: Vec<_> = model.parameters().iter().map(|(n, p)| (n.clone(), p.as_tensor().shape().clone())).collect();
        assert_eq!(after, shapes, "a load changed the model's shapes");
    }
    let mut opt = Adam::new(model.parameters(), AdamConfig::lr(1e-3));
    let _ = resume::load(&path, &model, &mut opt);
    if let Ok(x) = kiln_tensor::Tensor::ones([2, 4], kiln_tensor::DType::F32, &dev) {
        let _ = model.forward(&x);
    }
});
