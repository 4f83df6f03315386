"""Train a small CNN on scikit-learn's handwritten digits (8x8 images, 10 classes, shipped
with scikit-learn: no download) with fastdl.nn and Adam.

    pip install ".[examples]"
    python examples/train_digits.py              # fastdl
    python examples/train_digits.py --numpy      # the same network on plain-NumPy ops
    python examples/train_digits.py --compare    # both in one run: time per epoch side by side

The network: conv 3x3 (1->16) -> batch norm -> ReLU -> max pool 2 -> conv 3x3 (16->32) ->
batch norm -> ReLU -> max pool 2 -> flatten -> linear (128->10), softmax cross-entropy, Adam.
``--numpy`` swaps the fastdl functions the layers call for the NumPy versions of
``examples/numpy_ops.py`` (im2col convolution, reshape pooling, ...) and Adam for the cheat
sheet's NumPy loop: the same network, the same arithmetic, NumPy speed.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fastdl  # noqa: E402
from fastdl import nn  # noqa: E402


def load_data(seed=0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]          # (1797, 1, 8, 8)
    return train_test_split(x, digits.target, test_size=0.25, random_state=seed,
                            stratify=digits.target)


def build_model(seed=0):
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, seed=seed), nn.BatchNorm2d(16), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, seed=seed + 1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 10, seed=seed + 2))


def accuracy(model, x, y, batch=512):
    model.eval()
    hits = 0
    for i in range(0, len(x), batch):
        hits += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    model.train()
    return hits / len(x)


def _bar(iterable, total, desc, enabled):
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None or not enabled:
        return None, iterable
    bar = tqdm(iterable, total=total, desc=desc, leave=False, ncols=90)
    return bar, bar


def train(epochs=15, batch=32, lr=3e-3, seed=0, numpy_ops=False, progress=True, log=print):
    """Train; returns (model, test accuracy, seconds per epoch)."""
    x_train, x_test, y_train, y_test = load_data(seed)
    if numpy_ops:
        import numpy_ops as npo
        npo.patch_fastdl()
    model = build_model(seed)
    loss_fn = nn.CrossEntropyLoss()
    if numpy_ops:
        opt = npo.Adam(model.parameters(), lr=lr)
    else:
        opt = fastdl.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    side = "numpy" if numpy_ops else "fastdl"
    epoch_times = []
    for epoch in range(epochs):
        order = rng.permutation(len(x_train))
        steps = range(0, len(order), batch)
        bar, it = _bar(steps, len(steps), f"{side} epoch {epoch + 1}/{epochs}", progress)
        t0 = time.perf_counter()
        total, correct, seen = 0.0, 0, 0
        for i in it:
            idx = order[i:i + batch]
            xb, yb = x_train[idx], y_train[idx]
            logits = model(xb)
            loss = loss_fn.forward(logits, yb)
            model.zero_grad()
            model.backward(loss_fn.backward(), input_grad=False)
            opt.step(model.gradients())
            total += float(loss) * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
            if bar is not None:
                bar.set_postfix(loss=f"{total / seen:.3f}", acc=f"{correct / seen:.3f}")
        epoch_times.append(time.perf_counter() - t0)
        if bar is not None:
            bar.close()
        log(f"{side} epoch {epoch + 1:2d}: loss {total / seen:.4f}  train acc "
            f"{correct / seen:.4f}  ({epoch_times[-1] * 1e3:.0f} ms)")
    acc = accuracy(model, x_test, y_test)
    log(f"{side}: test accuracy {acc:.4f}; median epoch {np.median(epoch_times) * 1e3:.0f} ms")
    return model, acc, float(np.median(epoch_times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--numpy", action="store_true", help="plain-NumPy ops instead of fastdl")
    ap.add_argument("--compare", action="store_true",
                    help="train with fastdl, then with NumPy, and compare epoch times")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    kw = dict(epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed,
              progress=not args.no_progress)
    if args.compare:
        _, acc_f, t_f = train(**kw)
        _, acc_n, t_n = train(numpy_ops=True, **kw)
        print(f"\nper epoch: fastdl {t_f * 1e3:.0f} ms, NumPy {t_n * 1e3:.0f} ms: "
              f"{t_n / t_f:.1f}x; test accuracy fastdl {acc_f:.4f}, NumPy {acc_n:.4f}")
        return 0 if min(acc_f, acc_n) >= 0.97 else 1
    _, acc, _ = train(numpy_ops=args.numpy, **kw)
    return 0 if acc >= 0.97 else 1


if __name__ == "__main__":
    sys.exit(main())
