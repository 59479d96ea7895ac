//! What training prints and writes: the per-epoch table, the confusion matrix, and the
//! training curve (SVG).

use std::fmt::Write as _;
use std::path::Path;

/// One row of the per-epoch table.
pub struct EpochRow {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_acc: f64,
    pub test_acc: f64,
    pub seconds: f64,
    pub samples_per_sec: f64,
}

impl EpochRow {
    /// The table header.
    pub fn header() -> String {
        format!(
            "{:>5}  {:>10}  {:>9}  {:>9}  {:>8}  {:>10}",
            "epoch", "train loss", "train acc", "test acc", "seconds", "samples/s"
        )
    }
    /// This row, aligned with the header.
    pub fn line(&self) -> String {
        format!(
            "{:>5}  {:>10.4}  {:>8.2}%  {:>8.2}%  {:>8.2}  {:>10.0}",
            self.epoch, self.train_loss, self.train_acc, self.test_acc, self.seconds, self.samples_per_sec
        )
    }
}

/// The confusion matrix as a table: rows are true classes, columns predictions.
pub fn confusion_matrix(m: &[[u64; 10]], classes: &[&str; 10]) -> String {
    let mut s = String::from("confusion matrix (rows: true class, columns: predicted)\n");
    let w = classes.iter().map(|c| c.len()).max().unwrap_or(1).max(5);
    let _ = write!(s, "{:>w$} ", "");
    for j in 0..10 {
        let _ = write!(s, "{j:>6}");
    }
    s.push('\n');
    for (i, row) in m.iter().enumerate() {
        let _ = write!(s, "{:>w$} ", classes[i]);
        for v in row {
            let _ = write!(s, "{v:>6}");
        }
        s.push('\n');
    }
    s
}

/// Writes loss and accuracy per epoch as an SVG line chart.
pub fn write_curve(rows: &[EpochRow], path: &Path) -> kiln::Result<()> {
    let (w, h, pad) = (640.0, 360.0, 50.0);
    let n = rows.len().max(2) as f64 - 1.0;
    let x = |i: usize| pad + (w - 2.0 * pad) * (i as f64) / n;
    let max_loss = rows.iter().map(|r| r.train_loss).fold(1e-9, f64::max);
    let y_loss = |v: f64| h - pad - (h - 2.0 * pad) * v / max_loss;
    let y_acc = |v: f64| h - pad - (h - 2.0 * pad) * v / 100.0;
    let line = |f: &dyn Fn(&EpochRow) -> f64, y: &dyn Fn(f64) -> f64| -> String {
        rows.iter().enumerate().map(|(i, r)| format!("{:.1},{:.1}", x(i), y(f(r)))).collect::<Vec<_>>().join(" ")
    };
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(svg, r#"<line x1="{pad}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#, h - pad, w - pad, h - pad);
    let _ = write!(svg, r#"<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{}" stroke="black"/>"#, h - pad);
    let _ = write!(
        svg,
        r#"<polyline fill="none" stroke="crimson" stroke-width="2" points="{}"/>"#,
        line(&|r| r.train_loss, &y_loss)
    );
    let _ = write!(
        svg,
        r#"<polyline fill="none" stroke="steelblue" stroke-width="2" points="{}"/>"#,
        line(&|r| r.test_acc, &y_acc)
    );
    let _ = write!(
        svg,
        r#"<polyline fill="none" stroke="seagreen" stroke-width="2" stroke-dasharray="4" points="{}"/>"#,
        line(&|r| r.train_acc, &y_acc)
    );
    for (i, r) in rows.iter().enumerate() {
        let _ = write!(svg, r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#, x(i), h - pad + 16.0, r.epoch);
    }
    let _ = write!(svg, r#"<text x="{}" y="{}" text-anchor="middle">epoch</text>"#, w / 2.0, h - 10.0);
    let _ = write!(svg, r#"<text x="{pad}" y="20" fill="crimson">train loss (max {max_loss:.3})</text>"#);
    let _ = write!(svg, r#"<text x="{}" y="20" fill="steelblue">test accuracy (0-100 %)</text>"#, pad + 200.0);
    let _ = write!(svg, r#"<text x="{}" y="20" fill="seagreen">train accuracy</text>"#, pad + 400.0);
    svg.push_str("</svg>\n");
    kiln::nn::checkpoint::write_atomic(path, svg.as_bytes())
}
