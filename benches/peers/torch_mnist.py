"""PyTorch twin of `cargo run --release -p mnist` (MLP 784-128-ReLU-10, Adam lr 1e-3, batch 32).

Reads the IDX files kiln's fetcher cached, so both frameworks see the same bytes:
    python3 benches/peers/torch_mnist.py --seed 1 [--epochs 10] [--threads 2] [--scaling unit|standardized] [--schedule constant|cosine] [--loader index|dataloader]
`--loader index` (the default) slices shuffled tensors directly, the leanest PyTorch loop;
`--loader dataloader` batches through torch.utils.data.DataLoader, as PyTorch's examples do.
Prints one line per epoch: epoch, train loss, test accuracy, seconds.
"""
import argparse, gzip, os, pathlib, struct, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def cache_dir():
    if os.environ.get("KILN_DATA_DIR"):
        return pathlib.Path(os.environ["KILN_DATA_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "kiln"


def idx(path):
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(split, scaling):
    d = cache_dir() / "mnist"
    prefix = "train" if split == "train" else "t10k"
    x = idx(d / f"{prefix}-images-idx3-ubyte").astype(np.float32) / 255.0
    y = idx(d / f"{prefix}-labels-idx1-ubyte").astype(np.int64)
    if scaling == "standardized":
        x = (x - 0.1307) / 0.3081
    return torch.from_numpy(x.reshape(len(x), 784)), torch.from_numpy(y)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scaling", choices=["unit", "standardized"], default="unit")
    ap.add_argument("--schedule", choices=["constant", "cosine"], default="cosine")
    ap.add_argument("--loader", choices=["index", "dataloader"], default="index")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    xtr, ytr = load("train", a.scaling)
    xte, yte = load("test", a.scaling)
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # Stepped once per epoch, as kiln's --schedule cosine.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=a.epochs) if a.schedule == "cosine" else None
    for epoch in range(1, a.epochs + 1):
        t0 = time.perf_counter()
        total = 0.0
        if a.loader == "dataloader":
            batches = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xtr, ytr), batch_size=32, shuffle=True)
        else:
            perm = torch.randperm(len(xtr))
            batches = ((xtr[perm[i : i + 32]], ytr[perm[i : i + 32]]) for i in range(0, len(xtr), 32))
        for xb, yb in batches:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(yb)
        secs = time.perf_counter() - t0
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item() * 100
        print(f"{epoch} {total / len(xtr):.4f} {acc:.2f} {secs:.2f}", flush=True)
        if sched:
            sched.step()


if __name__ == "__main__":
    main()
