//! Resumable training: what a checkpoint records about the run (beside the model and optimizer
//! state that `kiln_nn::resume` saves), the Ctrl-C handler, and the command that resumes.

use crate::report::EpochRow;
use kiln::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where a run stands: the epoch in progress (1-based), the batches of it already done, that
/// epoch's running sums, and the table rows of the epochs before it.
#[derive(Default)]
pub struct Progress {
    pub epoch: usize,
    pub step: usize,
    pub loss_sum: f64,
    pub correct: i64,
    pub seen: usize,
    pub rows: Vec<EpochRow>,
}

fn field<T: std::str::FromStr>(map: &BTreeMap<String, String>, key: &str, path: &Path) -> Result<T> {
    map.get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Msg(format!("{}: the checkpoint has no valid '{key}'", path.display())))
}

impl Progress {
    /// The checkpoint's progress keys; `config` names the settings a resumed run must share.
    pub fn to_map(&self, config: &str) -> BTreeMap<String, String> {
        // `{:?}` prints the shortest decimal that parses back to the same f64: sums resume exactly.
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                format!(
                    "{} {:?} {:?} {:?} {:?} {:?}",
                    r.epoch, r.train_loss, r.train_acc, r.test_acc, r.seconds, r.samples_per_sec
                )
            })
            .collect();
        BTreeMap::from([
            ("config".into(), config.into()),
            ("epoch".into(), self.epoch.to_string()),
            ("step".into(), self.step.to_string()),
            ("loss_sum".into(), format!("{:?}", self.loss_sum)),
            ("correct".into(), self.correct.to_string()),
            ("seen".into(), self.seen.to_string()),
            ("rows".into(), rows.join(";")),
        ])
    }

    /// Reads the keys [`Progress::to_map`] wrote, refusing a checkpoint of other settings.
    pub fn from_map(map: &BTreeMap<String, String>, config: &str, path: &Path) -> Result<Progress> {
        let saved: String = field(map, "config", path)?;
        if saved != config {
            return Err(Error::Msg(format!(
                "{}: the checkpoint is of a run with other settings (it has `{saved}`, this run `{config}`); \
                 resume with the same options",
                path.display()
            )));
        }
        let mut rows = Vec::new();
        for row in map.get("rows").map(String::as_str).unwrap_or("").split(';').filter(|r| !r.is_empty()) {
            let v: Vec<f64> = row.split(' ').filter_map(|x| x.parse().ok()).collect();
            let [epoch, train_loss, train_acc, test_acc, seconds, samples_per_sec] = v[..] else {
                return Err(Error::Msg(format!("{}: a malformed epoch row '{row}'", path.display())));
            };
            rows.push(EpochRow { epoch: epoch as usize, train_loss, train_acc, test_acc, seconds, samples_per_sec });
        }
        Ok(Progress {
            epoch: field(map, "epoch", path)?,
            step: field(map, "step", path)?,
            loss_sum: field(map, "loss_sum", path)?,
            correct: field(map, "correct", path)?,
            seen: field(map, "seen", path)?,
            rows,
        })
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// On the first Ctrl-C, training finishes its step, writes a checkpoint and exits; a second
/// Ctrl-C exits at once.
pub fn install_ctrl_c() {
    let installed = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: finishing this step and writing a checkpoint (Ctrl-C again to quit now)");
    });
    if let Err(e) = installed {
        eprintln!("warning: Ctrl-C will stop training without a checkpoint ({e})");
    }
}

/// True once Ctrl-C was pressed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// This process's command line with `--resume <checkpoint>` in place of any earlier one.
pub fn resume_command(checkpoint: &Path) -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--resume") {
        args.drain(i..(i + 2).min(args.len()));
    }
    args.retain(|a| !a.starts_with("--resume="));
    if let Some(i) = args.iter().position(|a| a == "--stop-after") {
        args.drain(i..(i + 2).min(args.len()));
    }
    args.push("--resume".into());
    args.push(checkpoint.display().to_string());
    args.join(" ")
}
