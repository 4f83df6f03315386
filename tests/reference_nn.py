"""Plain NumPy float64 references for fastdl.nn and lstm_cell (cheat-sheet formulas).

The layers' single ops reuse the references of their kernels (reference.py,
reference_conv.py, reference_norm_pool.py, reference_attention.py, ...); this file adds the
compositions: the LSTM cell and sequence, multi-head attention, and a finite-difference
gradient helper.
"""

import numpy as np

from reference import linear_ref
from reference_attention import sdpa_ref


def _f64(*arrays):
    return [None if a is None else np.asarray(a, dtype=np.float64) for a in arrays]


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def lstm_cell_ref(x, h, c, w_ih, w_hh, b):
    """(h_new, c_new): gates = x W_ih + h W_hh + b split [i | f | g | o] (PyTorch order)."""
    x, h, c, w_ih, w_hh, b = _f64(x, h, c, w_ih, w_hh, b)
    z = x @ w_ih + h @ w_hh + b
    H = h.shape[1]
    i, f = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H])
    g, o = np.tanh(z[:, 2 * H:3 * H]), sigmoid(z[:, 3 * H:])
    c_new = f * c + i * g
    return o * np.tanh(c_new), c_new


def lstm_cell_backward_ref(dh_new, dc_new, x, h, c, w_ih, w_hh, b):
    """Hand-derived chain rule of lstm_cell_ref: (dx, dh, dc, dw_ih, dw_hh, db)."""
    dh_new, dc_new, x, h, c, w_ih, w_hh, b = _f64(dh_new, dc_new, x, h, c, w_ih, w_hh, b)
    z = x @ w_ih + h @ w_hh + b
    H = h.shape[1]
    i, f = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H])
    g, o = np.tanh(z[:, 2 * H:3 * H]), sigmoid(z[:, 3 * H:])
    tc = np.tanh(f * c + i * g)
    dcn = dc_new + dh_new * o * (1 - tc ** 2)
    dz = np.concatenate([dcn * g * i * (1 - i), dcn * c * f * (1 - f),
                         dcn * i * (1 - g ** 2), dh_new * tc * o * (1 - o)], axis=1)
    return (dz @ w_ih.T, dz @ w_hh.T, dcn * f, x.T @ dz, h.T @ dz, dz.sum(0))


def lstm_ref(x, layers, h0=None, c0=None):
    """A stacked batch-first LSTM: layers = [(w_ih, w_hh, b), ...]; returns
    (output (B, T, H), h_n, c_n) with h_n/c_n (num_layers, B, H)."""
    (x,) = _f64(x)
    B, T = x.shape[:2]
    hn, cn = [], []
    for l, (w_ih, w_hh, b) in enumerate(layers):
        H = np.shape(w_hh)[0]
        h = np.zeros((B, H)) if h0 is None else np.asarray(h0[l], np.float64)
        c = np.zeros((B, H)) if c0 is None else np.asarray(c0[l], np.float64)
        outs = []
        for t in range(T):
            h, c = lstm_cell_ref(x[:, t], h, c, w_ih, w_hh, b)
            outs.append(h)
        x = np.stack(outs, axis=1) if outs else np.zeros((B, 0, H))
        hn.append(h)
        cn.append(c)
    return x, np.stack(hn), np.stack(cn)


def mha_ref(query, key, value, p, num_heads, attn_mask=None, is_causal=False):
    """Multi-head attention with p = dict of q/k/v/out weights (in, out) and biases."""
    query, key, value = _f64(query, key, value)
    q = linear_ref(query, p["q_weight"], p.get("q_bias"))
    k = linear_ref(key, p["k_weight"], p.get("k_bias"))
    v = linear_ref(value, p["v_weight"], p.get("v_bias"))

    def split(t):
        B, L, E = t.shape
        return t.reshape(B, L, num_heads, E // num_heads).transpose(0, 2, 1, 3)

    o, _ = sdpa_ref(split(q), split(k), split(v), attn_mask, is_causal)
    B, Hh, L, D = o.shape
    om = o.transpose(0, 2, 1, 3).reshape(B, L, Hh * D)
    return linear_ref(om, p["out_weight"], p.get("out_bias"))


def numeric_grad(f, x, eps=1e-6):
    """Central differences of the scalar f() with respect to every element of x (float64,
    modified in place and restored)."""
    g = np.zeros_like(x, dtype=np.float64)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        fp = f()
        x[idx] = old - eps
        fm = f()
        x[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g
