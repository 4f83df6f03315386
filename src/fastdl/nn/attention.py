"""Multi-head attention, batch-first, heads inside, on fastdl's fused attention kernel."""

import numpy as np

import fastdl
from fastdl.nn.module import Module, as_input, check_dtype, make_rng, positive_int

__all__ = ["MultiHeadAttention"]


class MultiHeadAttention(Module):
    """``MultiHeadAttention(embed_dim, num_heads, bias=True, kdim=None, vdim=None)``.

    ``forward(query, key=None, value=None, attn_mask=None, is_causal=False)`` with query
    ``(batch, L, embed_dim)``, key ``(batch, S, kdim)``, value ``(batch, S, vdim)`` (key
    defaults to query, value to key: self-attention). Computes
    ``q = query @ q_weight + q_bias`` (likewise k, v; weights in the cheat sheet's
    ``(in, out)`` layout), splits the heads, runs ``fastdl.scaled_dot_product_attention``
    (scale ``1/sqrt(head_dim)``; the (L, S) scores are never materialised), merges the
    heads and projects with ``out_weight``, ``out_bias``. Returns ``(batch, L, embed_dim)``
    (no attention weights: they are never formed).

    ``attn_mask`` follows fastdl's convention, not PyTorch's MultiheadAttention: a boolean
    mask is **True where attention is allowed**; a float mask is added to the scores. It
    broadcasts to ``(batch, num_heads, L, S)``. ``is_causal`` masks key j > query i.

    ``backward(dy)`` returns dx for self-attention (key and value defaulted, or the same
    array as query: the three paths summed), else ``(dquery, dkey, dvalue)``, the gradient
    at each argument; two arguments that are the same array share one array holding the
    sum of their paths (e.g. key is value: ``dkey is dvalue``).

    Initialisation: Xavier uniform projections (attention feeds softmax, not a ReLU),
    zero biases.
    """

    def __init__(self, embed_dim, num_heads, bias=True, kdim=None, vdim=None, *,
                 dtype=np.float32, seed=None, rng=None):
        super().__init__()
        cls = "MultiHeadAttention"
        self.embed_dim = positive_int(embed_dim, "embed_dim", cls)
        self.num_heads = positive_int(num_heads, "num_heads", cls)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"fastdl.nn.MultiHeadAttention: embed_dim ({self.embed_dim}) "
                             f"must be divisible by num_heads ({self.num_heads})")
        self.head_dim = self.embed_dim // self.num_heads
        self.kdim = self.embed_dim if kdim is None else positive_int(kdim, "kdim", cls)
        self.vdim = self.embed_dim if vdim is None else positive_int(vdim, "vdim", cls)
        self.dtype = check_dtype(dtype, cls)
        gen = make_rng(seed, rng, cls)
        E = self.embed_dim
        self.has_bias = bool(bias)
        for name, fan_in in (("q", E), ("k", self.kdim), ("v", self.vdim), ("out", E)):
            self._param(f"{name}_weight", fastdl.init.xavier_uniform(fan_in, E, rng=gen,
                                                                       dtype=self.dtype))
            if self.has_bias:
                self._param(f"{name}_bias", np.zeros(E, self.dtype))
            else:
                object.__setattr__(self, f"{name}_bias", None)

    def _check(self, a, name, dim, batch=None):
        a = as_input(a, self.dtype, "MultiHeadAttention", name)
        if a.ndim != 3 or a.shape[2] != dim or (batch is not None and a.shape[0] != batch):
            b = "batch" if batch is None else batch
            raise ValueError(f"fastdl.nn.MultiHeadAttention: {name} has shape {a.shape}, "
                             f"expected ({b}, seq, {dim})")
        return a

    def forward(self, query, key=None, value=None, attn_mask=None, is_causal=False):
        same_k = key is None or key is query
        key = query if key is None else key
        same_v = value is None or value is key
        value = key if value is None else value
        query = self._check(query, "query", self.embed_dim)
        B = query.shape[0]
        key = query if same_k else self._check(key, "key", self.kdim, B)
        value = key if same_v else self._check(value, "value", self.vdim, B)
        if key.shape[1] != value.shape[1]:
            raise ValueError(f"fastdl.nn.MultiHeadAttention: key {key.shape} and value "
                             f"{value.shape} must have the same sequence length")
        H = self.num_heads
        q = fastdl.linear(query, self.q_weight, self.q_bias)
        k = fastdl.linear(key, self.k_weight, self.k_bias)
        v = fastdl.linear(value, self.v_weight, self.v_bias)
        qh, kh, vh = (fastdl.split_heads(t, H) for t in (q, k, v))
        o, lse = fastdl.scaled_dot_product_attention(qh, kh, vh, attn_mask, is_causal,
                                                     return_lse=True)
        om = fastdl.merge_heads(o)
        y = fastdl.linear(om, self.out_weight, self.out_bias)
        self._cache = (query, key, value, same_k, same_v, qh, kh, vh, o, lse, om, attn_mask,
                       bool(is_causal))
        return y

    def _proj_backward(self, name, dout, x):
        dx, dw, db = fastdl.linear_backward(dout, x, self._params[f"{name}_weight"],
                                            need_bias=self.has_bias)
        self._accumulate(self._grads[f"{name}_weight"], dw)
        if self.has_bias:
            self._accumulate(self._grads[f"{name}_bias"], db)
        return dx

    def backward(self, dy):
        (query, key, value, same_k, same_v, qh, kh, vh, o, lse, om, mask,
         causal) = self._cached()
        dom = self._proj_backward("out", dy, om)
        do = fastdl.split_heads(dom, self.num_heads)
        dqh, dkh, dvh = fastdl.scaled_dot_product_attention_backward(
            do, qh, kh, vh, o, lse, mask, causal)
        dquery = self._proj_backward("q", fastdl.merge_heads(dqh), query)
        dkey = self._proj_backward("k", fastdl.merge_heads(dkh), key)
        dvalue = self._proj_backward("v", fastdl.merge_heads(dvh), value)
        if same_v:
            dkey += dvalue
            dvalue = dkey
        if same_k:
            dquery += dkey
            if same_v:
                return dquery
            dkey = dquery
        return dquery, dkey, dvalue

    def extra_repr(self):
        return f"{self.embed_dim}, num_heads={self.num_heads}"
