//! `mnist`: train, evaluate and run digit classifiers with kiln.
//!
//! `cargo run --release -p mnist` downloads MNIST once (into `$KILN_DATA_DIR` or
//! `~/.cache/kiln`) and trains the classic 784-128-10 MLP with Adam for 10 epochs.
//!
//! The command line lives in this library so that a crate with a backend of its own can run
//! the very same program on it: register the backend with [`kiln::register_backend`], then call
//! [`main`] (examples/custom-backend does this).

mod image;
mod model;
mod progress;
mod report;
mod train;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// Train, evaluate and run MNIST classifiers with kiln.
#[derive(Parser, Debug)]
#[command(name = "mnist", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model (the default command).
    Train(TrainArgs),
    /// Evaluate a saved model on the test set.
    Eval(EvalArgs),
    /// Classify image files (PNG or PGM, any size).
    Predict(PredictArgs),
}

/// The two architectures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModelKind {
    /// 784-128-ReLU-10.
    Mlp,
    /// The CNN of PyTorch's MNIST example.
    Cnn,
}

/// The optimizers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerKind {
    /// Adam.
    Adam,
    /// AdamW.
    Adamw,
    /// SGD with momentum 0.9.
    Sgd,
    /// Adadelta (with StepLR, gamma 0.7 per epoch).
    Adadelta,
}

/// The datasets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DatasetKind {
    /// Handwritten digits.
    Mnist,
    /// Fashion-MNIST.
    Fashion,
}

/// How the learning rate changes from epoch to epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScheduleKind {
    /// The same rate every epoch.
    Constant,
    /// Cosine from --lr down to 0 over the run (`CosineAnnealingLR`, stepped per epoch).
    Cosine,
    /// Times 0.7 after every epoch (`StepLR(step_size=1, gamma=0.7)`, PyTorch's CNN example).
    Step,
}

/// The precision layers compute in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrecisionKind {
    /// f32 throughout.
    F32,
    /// Mixed precision: Linear and Conv2d in bf16 (tensor cores on a GPU); parameters,
    /// optimizer state and the loss in f32.
    Bf16,
    /// Mixed precision with f16 instead of bf16.
    F16,
}

impl PrecisionKind {
    /// The dtype layers compute in.
    pub fn dtype(self) -> kiln::DType {
        match self {
            PrecisionKind::F32 => kiln::DType::F32,
            PrecisionKind::Bf16 => kiln::DType::BF16,
            PrecisionKind::F16 => kiln::DType::F16,
        }
    }
}

/// How pixels become inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScalingKind {
    /// x / 255, in [0, 1] (the MLP's default, as in Keras' classic setup).
    Unit,
    /// (x / 255 - mean) / std with the dataset's constants (the CNN's default, as in PyTorch's example).
    Standardized,
}

/// How the CPU treats denormal floats during training.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenormalsKind {
    /// Flush to zero (FTZ and DAZ).
    Flush,
    /// IEEE 754 gradual underflow.
    Ieee,
}

/// Options shared by every command.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The architecture.
    #[arg(long, value_enum, default_value_t = ModelKind::Mlp)]
    pub model: ModelKind,
    /// The device: cpu, or cuda[:N] in a build with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// The dataset.
    #[arg(long, value_enum, default_value_t = DatasetKind::Mnist)]
    pub dataset: DatasetKind,
    /// Worker threads for the CPU backend (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Input scaling (default: unit for the MLP, standardized for the CNN); evaluation and
    /// prediction must use the scaling the model was trained with.
    #[arg(long, value_enum)]
    pub scaling: Option<ScalingKind>,
}

impl Common {
    /// The input scaling: `--scaling`, else the model's default.
    pub fn scaling(&self) -> kiln_data::mnist::Scaling {
        match (self.scaling, self.model) {
            (Some(ScalingKind::Unit), _) | (None, ModelKind::Mlp) => kiln_data::mnist::Scaling::UnitRange,
            (Some(ScalingKind::Standardized), _) | (None, ModelKind::Cnn) => kiln_data::mnist::Scaling::Standardized,
        }
    }
}

/// Options of `mnist train`.
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Model, device, dataset and threads.
    #[command(flatten)]
    pub common: Common,
    /// Epochs (default: 10 for the MLP, 14 for the CNN, as in the classic setups).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Batch size (default: 32 for the MLP, 64 for the CNN).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Learning rate (default: 1e-3 for Adam/AdamW, 1.0 for Adadelta, 0.01 for SGD).
    #[arg(long)]
    pub lr: Option<f64>,
    /// The optimizer (default: Adam for the MLP, Adadelta for the CNN).
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// The learning-rate schedule, stepped per epoch (default: step for Adadelta, as PyTorch's
    /// CNN example; cosine otherwise).
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleKind>,
    /// Compute precision: f32, or mixed precision with bf16 or f16 layers (f32 master weights,
    /// optimizer state and loss), as torch.autocast.
    #[arg(long, value_enum, default_value_t = PrecisionKind::F32)]
    pub dtype: PrecisionKind,
    /// Denormal floats on the CPU: flush them to zero (the default here, as TensorFlow's and
    /// XLA's CPU runtimes do) or keep IEEE 754 arithmetic (kiln's and PyTorch's library default).
    #[arg(long, value_enum, default_value_t = DenormalsKind::Flush)]
    pub denormals: DenormalsKind,
    /// Seed for initialisation, shuffling and dropout.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where to save the model (safetensors); the training curve is written beside it
    /// (default: target/mnist/<dataset>-<model>.safetensors).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Train on the first N training images only (a quick smoke run).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Time every backend op during the first epoch and print a table (any device: a
    /// profiling layer wraps its backend).
    #[arg(long)]
    pub profile: bool,
    /// Write every step's loss to this file (one `epoch step loss` line each), to compare runs
    /// and devices.
    #[arg(long)]
    pub loss_log: Option<PathBuf>,
    /// Where training checkpoints go (default: beside --save, with the extension `.ckpt`).
    /// One is written every --checkpoint-every steps and when Ctrl-C stops training.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Write a training checkpoint every N steps (0: only when interrupted).
    #[arg(long, default_value_t = 0)]
    pub checkpoint_every: usize,
    /// Continue the run saved in this training checkpoint, exactly where it stopped (same
    /// options; --epochs may grow).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Stop as Ctrl-C does, with a checkpoint, after N steps of this process (for testing resume).
    #[arg(long)]
    pub stop_after: Option<usize>,
}

/// Options of `mnist eval`.
#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// Model, device, dataset and threads.
    #[command(flatten)]
    pub common: Common,
    /// The checkpoint to evaluate.
    #[arg(long)]
    pub load: PathBuf,
}

/// Options of `mnist predict`.
#[derive(Args, Debug, Clone)]
pub struct PredictArgs {
    /// Model, device, dataset and threads.
    #[command(flatten)]
    pub common: Common,
    /// The checkpoint to use.
    #[arg(long)]
    pub load: PathBuf,
    /// Image files (PNG or PGM).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

fn init_threads(common: &Common) -> kiln::Result<()> {
    if let Some(n) = common.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global()
            .map_err(|e| kiln::Error::Msg(format!("--threads {n}: {e}")))?;
    }
    Ok(())
}

fn setup(common: &Common) -> kiln::Result<kiln::Device> {
    init_threads(common)?;
    kiln::device(&common.device)
}

/// The device for training: wrapped in a profiling layer with `--profile`.
fn train_device(args: &TrainArgs) -> kiln::Result<(kiln::Device, Option<kiln::profile::Stats>)> {
    // First: setting the flush mode below starts rayon's pool, after which its size is fixed.
    init_threads(&args.common)?;
    if args.denormals == DenormalsKind::Flush {
        // Adam's first moment decays by 0.9 a step, so the weights of pixels that are almost
        // always blank reach f32's denormal range within an epoch, where every multiply takes
        // a slow path; flushed, they are zero, and their updates (at most ~1e-34) vanish either way.
        kiln::kiln_cpu::set_flush_denormal(true);
    }
    if !args.profile {
        return Ok((kiln::device(&args.common.device)?, None));
    }
    let (dev, stats) = kiln::profiled_device(&args.common.device)?;
    Ok((dev, Some(stats)))
}

fn run(cli: Cli) -> kiln::Result<ExitCode> {
    let trained = |args: &TrainArgs| -> kiln::Result<ExitCode> {
        let (dev, stats) = train_device(args)?;
        let finished = kiln::nn::autocast(args.dtype.dtype(), || train::train(args, &dev, stats))?;
        Ok(match finished {
            train::Finished::Done => ExitCode::SUCCESS,
            // 130: the shell's code for a run stopped by Ctrl-C.
            train::Finished::Interrupted => ExitCode::from(130),
        })
    };
    match cli.command {
        None => trained(&cli.train),
        Some(Command::Train(args)) => trained(&args),
        Some(Command::Eval(args)) => {
            let dev = setup(&args.common)?;
            train::eval(&args, &dev).map(|()| ExitCode::SUCCESS)
        }
        Some(Command::Predict(args)) => {
            let dev = setup(&args.common)?;
            image::predict(&args, &dev).map(|()| ExitCode::SUCCESS)
        }
    }
}

/// The `mnist` command line: parses the process's arguments, runs the command, and reports an
/// error on stderr with a failing exit code.
pub fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
