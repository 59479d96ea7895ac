//! A printable model summary: each layer, its output shape and its parameter count.

use crate::module::Module;
use kiln_tensor::{no_grad, Result, Tensor};

/// Runs `input` through `module` (layer by layer when it has children) and returns a table of
/// layer, output shape and parameters, like `torchinfo.summary`.
pub fn summary(module: &dyn Module, input: &Tensor) -> Result<String> {
    no_grad(|| {
        let mut rows: Vec<(String, String, usize)> = Vec::new();
        let children = module.children();
        let out = if children.is_empty() {
            let y = module.forward(input)?;
            rows.push((module.describe(), format!("{}", y.shape()), module.num_parameters()));
            y
        } else {
            let mut x = input.clone();
            for (name, child) in children {
                x = child.forward(&x)?;
                rows.push((format!("{name}: {}", child.describe()), format!("{}", x.shape()), child.num_parameters()));
            }
            x
        };
        let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max("Layer".len());
        let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max("Output shape".len());
        let mut s = format!("{:<w0$}  {:<w1$}  {:>10}\n", "Layer", "Output shape", "Params");
        s.push_str(&format!("{}\n", "-".repeat(w0 + w1 + 14)));
        for (layer, shape, params) in &rows {
            s.push_str(&format!("{layer:<w0$}  {shape:<w1$}  {params:>10}\n"));
        }
        s.push_str(&format!("{}\n", "-".repeat(w0 + w1 + 14)));
        s.push_str(&format!(
            "Input {}, output {}, {} parameters\n",
            input.shape(),
            out.shape(),
            module.num_parameters()
        ));
        Ok(s)
    })
}
