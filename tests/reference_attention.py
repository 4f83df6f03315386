"""NumPy float64 references for scaled dot-product attention: the cheat sheet's materialised
formula softmax(Q K^T * scale + mask) V and its backward, over broadcast batch dimensions.

A query row whose every key is masked gives zeros (fastdl's documented rule) and lse = -inf.
"""

import numpy as np


def _scores(q, k, attn_mask, is_causal, scale):
    q = np.asarray(q, np.float64)
    k = np.asarray(k, np.float64)
    E = q.shape[-1]
    if scale is None:
        scale = 1.0 / np.sqrt(E) if E else 1.0
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    L, S = s.shape[-2:]
    if is_causal:
        s = np.where(np.triu(np.ones((L, S), bool), 1), -np.inf, s)
    if attn_mask is not None:
        m = np.asarray(attn_mask)
        if m.dtype == np.bool_:
            s = np.where(m, s, -np.inf)
        else:
            s = s + m.astype(np.float64)
    return s, scale


def _softmax_rows(s):
    m = np.max(s, axis=-1, keepdims=True) if s.shape[-1] else np.full(s.shape[:-1] + (1,), -np.inf)
    dead = m == -np.inf
    ref = np.where(dead, 0.0, m)
    e = np.exp(s - ref)
    tot = e.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(tot > 0, e / np.where(tot > 0, tot, 1.0), 0.0)
        lse = np.where(tot[..., 0] > 0, ref[..., 0] + np.log(np.where(tot > 0, tot, 1.0))[..., 0],
                       -np.inf)
    nan = np.isnan(tot[..., 0])
    p = np.where(nan[..., None], np.nan, p)
    lse = np.where(nan, np.nan, lse)
    return p, lse


def sdpa_ref(q, k, v, attn_mask=None, is_causal=False, scale=None):
    """(out, lse) in float64."""
    s, _ = _scores(q, k, attn_mask, is_causal, scale)
    p, lse = _softmax_rows(s)
    return np.matmul(p, np.asarray(v, np.float64)), lse


def _sum_to(g, shape):
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape)
                                      if n == 1 and g.shape[i + lead] != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape)


def sdpa_backward_ref(dout, q, k, v, attn_mask=None, is_causal=False, scale=None):
    """(dq, dk, dv) in float64, the chain rule through the materialised formula."""
    q64, k64, v64 = (np.asarray(a, np.float64) for a in (q, k, v))
    s, scale = _scores(q64, k64, attn_mask, is_causal, scale)
    p, _ = _softmax_rows(s)
    do = np.asarray(dout, np.float64)
    dv = np.matmul(np.swapaxes(p, -1, -2), do)
    dp = np.matmul(do, np.swapaxes(v64, -1, -2))
    ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True))
    dq = np.matmul(ds, k64) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q64) * scale
    return (_sum_to(np.broadcast_to(dq, np.broadcast_shapes(dq.shape)), np.shape(q)),
            _sum_to(dk, np.shape(k)), _sum_to(dv, np.shape(v)))
