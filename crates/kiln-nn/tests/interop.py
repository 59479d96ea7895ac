"""Safetensors interop between kiln and Python (numpy only, PyTorch names and layouts).

Usage: python3 interop.py DIR
1. Reads the 784-128-10 MLP that kiln wrote to DIR/kiln_mlp.safetensors and the inputs and
   logits in DIR/kiln_data.safetensors, runs a plain numpy forward pass and checks that it
   predicts the same classes (and logits to 1e-4).
2. Writes a model of its own with PyTorch's state_dict names and [out, in] layouts
   (DIR/py_mlp.safetensors) and inputs with the logits numpy computes for them
   (DIR/py_data.safetensors), for kiln to load and check.
"""
import sys

import numpy as np
from safetensors.numpy import load_file, save_file


def forward(p, x):
    h = np.maximum(x @ p["0.weight"].T + p["0.bias"], 0.0)
    return h @ p["2.weight"].T + p["2.bias"]


def main(d):
    p = {k: v.astype(np.float64) for k, v in load_file(f"{d}/kiln_mlp.safetensors").items()}
    assert p["0.weight"].shape == (128, 784) and p["2.weight"].shape == (10, 128), {k: v.shape for k, v in p.items()}
    data = load_file(f"{d}/kiln_data.safetensors")
    x, kiln_logits = data["x"].astype(np.float64), data["logits"].astype(np.float64)
    ours = forward(p, x)
    same = int((ours.argmax(1) == kiln_logits.argmax(1)).sum())
    diff = float(np.abs(ours - kiln_logits).max())
    print(f"python: kiln checkpoint -> numpy: {same}/{len(x)} predictions agree, max |logit diff| {diff:.2e}")
    assert same == len(x) and diff < 1e-4

    rng = np.random.default_rng(1234)
    b0, b2 = 1 / np.sqrt(784), 1 / np.sqrt(128)
    q = {
        "0.weight": rng.uniform(-b0, b0, (128, 784)).astype(np.float32),
        "0.bias": rng.uniform(-b0, b0, (128,)).astype(np.float32),
        "2.weight": rng.uniform(-b2, b2, (10, 128)).astype(np.float32),
        "2.bias": rng.uniform(-b2, b2, (10,)).astype(np.float32),
    }
    x2 = rng.uniform(0, 1, (1000, 784)).astype(np.float32)
    logits = forward({k: v.astype(np.float64) for k, v in q.items()}, x2.astype(np.float64))
    save_file(q, f"{d}/py_mlp.safetensors")
    save_file({"x": x2, "logits": logits.astype(np.float32)}, f"{d}/py_data.safetensors")
    print("python: wrote py_mlp.safetensors and py_data.safetensors")


if __name__ == "__main__":
    main(sys.argv[1])
