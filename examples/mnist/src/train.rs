//! The training loop and evaluation.

use crate::report::{confusion_matrix, write_curve, EpochRow};
use crate::{model, DatasetKind, EvalArgs, ModelKind, OptimizerKind, TrainArgs};
use kiln::nn::optim::{Adadelta, AdadeltaConfig, Adam, AdamConfig, AdamW, AdamWConfig, Optimizer, Sgd, SgdConfig};
use kiln::nn::scheduler::{LrSchedule, StepLr};
use kiln::nn::{checkpoint, loss, Module};
use kiln::prelude::*;
use kiln_data::mnist::Kind;
use kiln_data::{DataLoader, Dataset, InMemory};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

fn kind(d: DatasetKind) -> Kind {
    match d {
        DatasetKind::Mnist => Kind::Mnist,
        DatasetKind::Fashion => Kind::Fashion,
    }
}

fn dataset_name(d: DatasetKind) -> &'static str {
    if d == DatasetKind::Mnist {
        "mnist"
    } else {
        "fashion"
    }
}

fn name(d: DatasetKind, m: ModelKind) -> String {
    let m = if m == ModelKind::Mlp { "mlp" } else { "cnn" };
    format!("{}-{m}", dataset_name(d))
}

/// Accuracy (%) and the confusion matrix of `model` on `data`, in batches of 200 (the CNN's
/// im2col columns take 0.66 MB per image; 200 keep them in the CPU backend's buffer pool).
pub fn evaluate(model: &dyn Module, data: Arc<dyn Dataset>, dev: &Device) -> Result<(f64, Vec<[u64; 10]>)> {
    model.eval();
    let loader = DataLoader::new(data, 200, dev)?;
    let mut confusion = vec![[0u64; 10]; 10];
    let (mut correct, mut total) = (0u64, 0u64);
    for batch in loader.epoch(0) {
        let batch = batch?;
        let pred = no_grad(|| model.forward(&batch.inputs)?.argmax(-1, false))?.to_vec::<i64>()?;
        for (p, t) in pred.iter().zip(batch.labels.to_vec::<i64>()?) {
            confusion[t as usize][*p as usize] += 1;
            correct += (*p == t) as u64;
            total += 1;
        }
    }
    model.train();
    Ok((100.0 * correct as f64 / total.max(1) as f64, confusion))
}

/// `mnist train`.
pub fn train(args: &TrainArgs, dev: &Device, profile: Option<kiln::profile::Stats>) -> Result<()> {
    let c = &args.common;
    let cnn = c.model == ModelKind::Cnn;
    let epochs = args.epochs.unwrap_or(if cnn { 14 } else { 10 });
    let batch_size = args.batch_size.unwrap_or(if cnn { 64 } else { 32 });
    let opt_kind = args.optimizer.unwrap_or(if cnn { OptimizerKind::Adadelta } else { OptimizerKind::Adam });
    let lr = args.lr.unwrap_or(match opt_kind {
        OptimizerKind::Adam | OptimizerKind::Adamw => 1e-3,
        OptimizerKind::Adadelta => 1.0,
        OptimizerKind::Sgd => 0.01,
    });
    let save = args
        .save
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/mnist").join(format!("{}.safetensors", name(c.dataset, c.model))));

    let (train_set, test_set) = kiln_data::mnist::load(kind(c.dataset), c.scaling())?;
    let train_set: InMemory = match args.limit {
        Some(n) => train_set.truncate(n),
        None => train_set,
    };
    let (train_set, test_set): (Arc<dyn Dataset>, Arc<dyn Dataset>) = (Arc::new(train_set), Arc::new(test_set));
    kiln::nn::manual_seed(args.seed);
    let model = model::build(c.model, dev)?;
    let params = model.parameters();
    let mut opt: Box<dyn Optimizer> = match opt_kind {
        OptimizerKind::Adam => Box::new(Adam::new(params, AdamConfig::lr(lr))),
        OptimizerKind::Adamw => {
            Box::new(AdamW::new(params, AdamWConfig(AdamConfig { lr, ..AdamWConfig::default().0 })))
        }
        OptimizerKind::Sgd => Box::new(Sgd::new(params, SgdConfig { momentum: 0.9, ..SgdConfig::new(lr) })),
        OptimizerKind::Adadelta => Box::new(Adadelta::new(params, AdadeltaConfig { lr, ..AdadeltaConfig::default() })),
    };
    // PyTorch's example steps StepLR(gamma 0.7) after every epoch with Adadelta.
    let schedule = (opt_kind == OptimizerKind::Adadelta).then_some(StepLr { base: lr, step_size: 1, gamma: 0.7 });
    let loader = DataLoader::new(train_set.clone(), batch_size, dev)?.shuffle(args.seed);

    println!(
        "kiln mnist: {} on {} ({} train / {} test images), {:?} lr {lr}, batch {batch_size}, {epochs} epochs, device {}, seed {}",
        name(c.dataset, c.model),
        dataset_name(c.dataset),
        train_set.len(),
        test_set.len(),
        opt_kind,
        dev.location(),
        args.seed
    );
    println!("{}", EpochRow::header());
    let mut rows = Vec::new();
    let mut loss_log = String::new();
    for epoch in 1..=epochs {
        if let Some(s) = &schedule {
            opt.set_lr(s.lr_at(epoch - 1));
        }
        let bar = indicatif::ProgressBar::new(train_set.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {per_sec} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_prefix(epoch.to_string());
        let start = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0i64, 0usize);
        for (i, batch) in loader.epoch(epoch as u64).enumerate() {
            let batch = batch?;
            let logits = model.forward(&batch.inputs)?;
            let loss = loss::cross_entropy(&logits, &batch.labels)?;
            let grads = loss.backward()?;
            opt.step(&grads)?;
            let n = batch.labels.elem_count();
            let step_loss = loss.to_scalar::<f32>()?;
            loss_sum += step_loss as f64 * n as f64;
            if args.loss_log.is_some() {
                loss_log.push_str(&format!("{epoch} {i} {step_loss:e}\n"));
            }
            correct += no_grad(|| logits.argmax(-1, false)?.eq(&batch.labels)?.sum_all())?.to_scalar::<i64>()?;
            seen += n;
            bar.inc(n as u64);
            if i % 50 == 0 {
                bar.set_message(format!("loss {:.4}", loss_sum / seen as f64));
            }
        }
        bar.finish_and_clear();
        let seconds = start.elapsed().as_secs_f64();
        let (test_acc, _) = evaluate(&model, test_set.clone(), dev)?;
        let row = EpochRow {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            train_acc: 100.0 * correct as f64 / seen.max(1) as f64,
            test_acc,
            seconds,
            samples_per_sec: seen as f64 / seconds,
        };
        println!("{}", row.line());
        rows.push(row);
        if let Some(stats) = profile.as_ref().filter(|_| epoch == 1) {
            println!("\nbackend ops of epoch 1 (training and evaluation):\n{}", stats.table());
        }
    }
    let (acc, confusion) = evaluate(&model, test_set, dev)?;
    println!("\ntest accuracy {acc:.2} %\n{}", confusion_matrix(&confusion, &kind(c.dataset).classes()));
    if let Some(dir) = save.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| kiln::Error::Msg(format!("{}: {e}", dir.display())))?;
    }
    checkpoint::save(&model, &save, None)?;
    if let Some(path) = &args.loss_log {
        checkpoint::write_atomic(path, loss_log.as_bytes())?;
        println!("wrote every step's loss to {}", path.display());
    }
    let curve = save.with_extension("svg");
    write_curve(&rows, &curve)?;
    println!("saved the model to {} and the training curve to {}", save.display(), curve.display());
    Ok(())
}

/// `mnist eval`.
pub fn eval(args: &EvalArgs, dev: &Device) -> Result<()> {
    let c = &args.common;
    let model = model::build(c.model, dev)?;
    checkpoint::load(&model, &args.load, true)?;
    let (_, test_set) = kiln_data::mnist::load(kind(c.dataset), c.scaling())?;
    let (acc, confusion) = evaluate(&model, Arc::new(test_set), dev)?;
    println!("test accuracy {acc:.2} %\n{}", confusion_matrix(&confusion, &kind(c.dataset).classes()));
    Ok(())
}
