"""A small transformer-encoder classifier, trained with fastdl.nn and Adam on a real dataset
that ships with scikit-learn: the handwritten digits, read as SEQUENCES of 8 tokens (the 8
pixel rows of each 8x8 image, 8 features per token), the row-by-row sequence task often
used for recurrent networks. Nothing is downloaded.

    pip install ".[examples]"
    python examples/train_transformer.py

The model (pre-norm encoder, batch-first (batch, seq, embed) as the cheat sheet writes it):
token embedding Linear(8 -> 48) + a learned positional embedding, two blocks of
x + MultiHeadAttention(LayerNorm(x)) (4 heads) and x + MLP(LayerNorm(x)) (48 -> 96 -> GELU ->
48), a final LayerNorm, the mean over the tokens, and Linear(48 -> 10). It also shows how to
write a layer of your own: a Module with a parameter, forward and backward.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fastdl  # noqa: E402
from fastdl import nn  # noqa: E402
from train_digits import _bar, load_data  # noqa: E402


class PositionalEmbedding(nn.Module):
    """x + P, P a learned (seq, embed) table: a custom layer on the Module base."""

    def __init__(self, seq, embed, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self._param("table", (0.02 * rng.standard_normal((seq, embed))).astype(np.float32))

    def forward(self, x):
        return x + self.table

    def backward(self, dy):
        self.grad("table")[...] += dy.sum(0)
        return dy


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: h = x + attn(ln1(x)); y = h + mlp(ln2(h))."""

    def __init__(self, embed, heads, hidden, seed=0):
        super().__init__()
        self.ln1 = nn.LayerNorm(embed)
        self.attn = nn.MultiHeadAttention(embed, heads, seed=seed)
        self.ln2 = nn.LayerNorm(embed)
        self.mlp = nn.Sequential(nn.Linear(embed, hidden, seed=seed + 1), nn.GELU(),
                                 nn.Linear(hidden, embed, seed=seed + 2))

    def forward(self, x):
        h = x + self.attn(self.ln1(x))
        return h + self.mlp(self.ln2(h))

    def backward(self, dy):
        dh = dy + self.ln2.backward(self.mlp.backward(dy))
        return dh + self.ln1.backward(self.attn.backward(dh))


class MeanOverTokens(nn.Module):
    def forward(self, x):
        self._tokens = x.shape[1]
        return x.mean(1)

    def backward(self, dy):
        return np.repeat(dy[:, None, :] / self._tokens, self._tokens, axis=1)


def build_model(embed=48, heads=4, blocks=2, seed=0):
    layers = [nn.Linear(8, embed, seed=seed), PositionalEmbedding(8, embed, seed=seed + 1)]
    for b in range(blocks):
        layers.append(EncoderBlock(embed, heads, 2 * embed, seed=seed + 10 * (b + 1)))
    layers += [nn.LayerNorm(embed), MeanOverTokens(), nn.Linear(embed, 10, seed=seed + 99)]
    return nn.Sequential(*layers)


def train(epochs=40, batch=64, lr=2e-3, seed=0, progress=True, log=print):
    x_train, x_test, y_train, y_test = load_data(seed)
    x_train, x_test = x_train[:, 0], x_test[:, 0]          # (N, 8 rows, 8 pixels)
    model = build_model(seed=seed)
    loss_fn = nn.CrossEntropyLoss()
    opt = fastdl.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        order = rng.permutation(len(x_train))
        steps = range(0, len(order), batch)
        bar, it = _bar(steps, len(steps), f"epoch {epoch + 1}/{epochs}", progress)
        t0 = time.perf_counter()
        total, correct = 0.0, 0
        for i in it:
            idx = order[i:i + batch]
            logits = model(x_train[idx])
            loss = loss_fn.forward(logits, y_train[idx])
            model.zero_grad()
            model.backward(loss_fn.backward())
            opt.step(model.gradients())
            total += float(loss) * len(idx)
            correct += int((logits.argmax(1) == y_train[idx]).sum())
            if bar is not None:
                bar.set_postfix(loss=f"{float(loss):.3f}")
        if bar is not None:
            bar.close()
        if (epoch + 1) % 5 == 0 or epoch == 0:
            log(f"epoch {epoch + 1:2d}: loss {total / len(order):.4f}  train acc "
                f"{correct / len(order):.4f}  ({(time.perf_counter() - t0) * 1e3:.0f} ms)")
    model.eval()
    acc = float((model(x_test).argmax(1) == y_test).mean())
    log(f"test accuracy {acc:.4f}")
    return model, acc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    _, acc = train(args.epochs, args.batch, args.lr, args.seed, not args.no_progress)
    return 0 if acc >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
