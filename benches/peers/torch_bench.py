"""PyTorch side of `cargo xtask bench --compare`: the same cases under the same ids as kiln's
criterion benches, timed the same way (median of repeated batches), on 2 threads.

    python3 benches/peers/torch_bench.py --out target/bench/torch.json [--filter REGEX] [--threads 2]
    python3 benches/peers/torch_bench.py --serve [--threads 2]

With --serve (what `cargo xtask bench --compare` uses) it prints {"torch": VERSION}, then reads
one case id per line and answers each with {"id": ID, "median_ns": TIME or null}, so that each
case is timed right after kiln's.
"""
import argparse, json, re, statistics, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F

MATMUL = [(64, 64, 64), (128, 128, 128), (256, 256, 256), (512, 512, 512), (1024, 1024, 1024),
          (2048, 2048, 2048), (32, 784, 128), (32, 128, 10), (10, 32, 128), (128, 32, 784),
          (32, 10, 128), (43264, 9, 32), (36864, 288, 64)]
SIZES = [(1 << 10, "1K"), (1 << 16, "64K"), (1 << 20, "1M"), (1 << 24, "16M")]


def median_ns(fn, budget=1.0):
    for _ in range(3):
        fn()
    t0 = time.perf_counter(); fn(); one = max(time.perf_counter() - t0, 1e-7)
    iters = max(1, int(0.05 / one))
    samples = []
    deadline = time.perf_counter() + budget
    while len(samples) < 20 and (time.perf_counter() < deadline or len(samples) < 5):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        samples.append((time.perf_counter() - t0) / iters * 1e9)
    return statistics.median(samples)


def cases():
    for m, k, n in MATMUL:
        a, b = torch.randn(m, k), torch.randn(k, n)
        yield f"matmul/f32/{m}x{k}x{n}", lambda a=a, b=b: a @ b
    for n, label in SIZES:
        a, b = torch.randn(n), torch.randn(n)
        yield f"elementwise/add/f32/{label}", lambda a=a, b=b: a + b
        yield f"elementwise/mul/f32/{label}", lambda a=a, b=b: a * b
        yield f"elementwise/relu/f32/{label}", lambda a=a: torch.relu(a)
        yield f"elementwise/exp/f32/{label}", lambda a=a: torch.exp(a)
    for rows, cols in [(1024, 1024), (4096, 1000), (32, 10)]:
        x = torch.randn(rows, cols)
        yield f"reduce/sum_rows/f32/{rows}x{cols}", lambda x=x: x.sum(-1)
        # amax, not max(dim): that also returns the indices, which kiln's max does not compute.
        yield f"reduce/max_rows/f32/{rows}x{cols}", lambda x=x: x.amax(-1)
        yield f"reduce/softmax/f32/{rows}x{cols}", lambda x=x: torch.softmax(x, -1)
    maps = torch.randn(16, 32, 26, 26)
    yield "reduce/sum_channels/f32/16x32x26x26", lambda: maps.sum((0, 2, 3))
    yield "reduce/max_channels/f32/16x32x26x26", lambda: maps.amax((0, 2, 3))
    a, b = torch.ones(1), torch.ones(1)
    yield "overhead/add_1_element", lambda: a + b
    for cin, cout, side in [(1, 32, 28), (32, 64, 26)]:
        x = torch.randn(64, cin, side, side)
        w = torch.randn(cout, cin, 3, 3) * 0.1
        ident = f"b64_{cin}to{cout}_{side}x{side}"
        yield f"conv/conv2d_fwd/f32/{ident}", lambda x=x, w=w: F.conv2d(x, w)
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        yield f"conv/conv2d_fwd_bwd/f32/{ident}", lambda xg=xg, wg=wg: torch.autograd.grad(F.conv2d(xg, wg).sum(), [xg, wg])
    x = torch.randn(64, 64, 24, 24)
    yield "conv/max_pool2d_fwd/f32/b64_64x24x24", lambda x=x: F.max_pool2d(x, 2)
    for batch in [32, 128]:
        model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x, y = torch.randn(batch, 784), torch.arange(batch) % 10

        def step(model=model, opt=opt, x=x, y=y):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        yield f"train/mlp_step_adam/f32/b{batch}", step
    cnn = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Dropout(0.25), nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5),
                        nn.Linear(128, 10))
    copt = torch.optim.Adadelta(cnn.parameters(), lr=1.0)
    cx, cy = torch.randn(64, 1, 28, 28), torch.arange(64) % 10

    def cnn_step():
        copt.zero_grad()
        F.cross_entropy(cnn(cx), cy).backward()
        copt.step()
    yield "train/cnn_step_adadelta/f32/b64", cnn_step
    mlp = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    tx = torch.randn(10000, 784)

    def infer(x):
        with torch.no_grad():
            for i in range(10):
                mlp(x[i * 1000:(i + 1) * 1000]).argmax(-1)
    yield "infer/mlp/f32/10000_in_batches_of_1000", lambda: infer(tx)
    images = mnist_test_images()
    if images is not None:
        yield "infer/mlp/f32/mnist_test_images_in_batches_of_1000", lambda: infer(images)


def mnist_test_images():
    """The MNIST test images in [0, 1], from the cache kiln's bench fetched them into
    (kiln_data::fetch::cache_dir: $KILN_DATA_DIR, else $XDG_CACHE_HOME/kiln, else
    %LOCALAPPDATA%/kiln, else ~/.cache/kiln), or None when they are not there."""
    import gzip, os
    import numpy as np
    env = os.environ.get
    base = env("KILN_DATA_DIR") or os.path.join(
        env("XDG_CACHE_HOME") or env("LOCALAPPDATA") or os.path.join(os.path.expanduser("~"), ".cache"), "kiln")
    path = os.path.join(base, "mnist", "t10k-images-idx3-ubyte")
    for name, opener in [(path, open), (path + ".gz", gzip.open)]:
        if os.path.exists(name):
            with opener(name, "rb") as f:
                raw = f.read()
            pixels = np.frombuffer(raw, dtype=np.uint8, offset=16).astype(np.float32) / 255.0
            return torch.from_numpy(pixels.reshape(-1, 784).copy())
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--filter", default="")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.serve:
        table = dict(cases())
        print(json.dumps({"torch": torch.__version__, "threads": a.threads}), flush=True)
        for line in sys.stdin:
            ident = line.strip()
            fn = table.get(ident)
            print(json.dumps({"id": ident, "median_ns": median_ns(fn) if fn else None}), flush=True)
        return
    if not a.out:
        ap.error("one of --out FILE or --serve is needed")
    pat = re.compile(a.filter)
    out = {"torch": torch.__version__, "threads": a.threads, "median_ns": {}}
    for ident, fn in cases():
        if pat.search(ident):
            out["median_ns"][ident] = median_ns(fn)
    with open(a.out + ".tmp", "w") as f:
        json.dump(out, f, indent=1)
    import os
    os.replace(a.out + ".tmp", a.out)


if __name__ == "__main__":
    main()
