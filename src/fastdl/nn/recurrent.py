"""LSTM over batch-first sequences, on the fused cell kernel of ``fastdl._ext._lstm``.

Per layer, the input half of every step's gates is one GEMM over the whole sequence
(``X (B*T, I) @ w_ih + b``); each step then only accumulates ``h @ w_hh`` onto its slice of
those gates (one BLAS call, beta = 1) and runs the fused nonlinearity pass, which overwrites that step's gate slice with the activated gates: the
cache of the backward, so the backward never recomputes a gate. Backward through time walks
the steps in reverse (one fused pass and one ``dG_t @ w_hhᵀ`` per step), then finishes with
three sequence-wide GEMMs: ``dX = dG @ w_ihᵀ``, ``dw_ih = Xᵀ dG``, ``dw_hh = H_prevᵀ dG``.
"""

import numpy as np

import fastdl
from fastdl._ext._lstm import _add_matmul, _forward_rows, _backward_rows
from fastdl.nn.module import Module, as_input, check_dtype, make_rng, positive_int

__all__ = ["LSTM"]


class LSTM(Module):
    """``LSTM(input_size, hidden_size, num_layers=1, bias=True)``, batch-first.

    ``forward(x, hx=None)``: x ``(batch, seq, input_size)``, ``hx = (h0, c0)`` each
    ``(num_layers, batch, hidden_size)`` (default zeros). Returns
    ``(output, (h_n, c_n))`` as ``torch.nn.LSTM(batch_first=True)``: output
    ``(batch, seq, hidden_size)`` the last layer's hidden states, h_n/c_n
    ``(num_layers, batch, hidden_size)``.

    ``backward(dy, dh_n=None, dc_n=None)``: dy the gradient of ``output`` (None: zero),
    dh_n/dc_n those of the final state (None: zero). Returns dx; the gradients of h0 and c0
    are left in ``self.hx_grad = (dh0, dc0)``.

    Parameters per layer l, in the cheat sheet's layout: ``weight_ih_l{l}``
    ``(in, 4 * hidden)``, ``weight_hh_l{l}`` ``(hidden, 4 * hidden)``, ``bias_l{l}``
    ``(4 * hidden,)`` (PyTorch's ``b_ih + b_hh`` in one), gates ``[i | f | g | o]``.
    Initialisation: Xavier uniform weights (the gates feed sigmoid/tanh), zero biases.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, *,
                 dtype=np.float32, seed=None, rng=None):
        super().__init__()
        cls = "LSTM"
        self.input_size = positive_int(input_size, "input_size", cls)
        self.hidden_size = positive_int(hidden_size, "hidden_size", cls)
        self.num_layers = positive_int(num_layers, "num_layers", cls)
        self.dtype = check_dtype(dtype, cls)
        self.has_bias = bool(bias)
        gen = make_rng(seed, rng, cls)
        H = self.hidden_size
        for l in range(self.num_layers):
            fan_in = self.input_size if l == 0 else H
            self._param(f"weight_ih_l{l}", fastdl.init.xavier_uniform(
                fan_in, 4 * H, rng=gen, dtype=self.dtype))
            self._param(f"weight_hh_l{l}", fastdl.init.xavier_uniform(
                H, 4 * H, rng=gen, dtype=self.dtype))
            if self.has_bias:
                self._param(f"bias_l{l}", np.zeros(4 * H, self.dtype))
        self.hx_grad = None

    def _layer(self, l):
        p = self._params
        return p[f"weight_ih_l{l}"], p[f"weight_hh_l{l}"], p.get(f"bias_l{l}")

    def forward(self, x, hx=None):
        x = as_input(x, self.dtype, "LSTM")
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"fastdl.nn.LSTM: x has shape {x.shape}, expected (batch, seq, "
                             f"{self.input_size})")
        B, T, H, NL = x.shape[0], x.shape[1], self.hidden_size, self.num_layers
        dt = self.dtype
        state_shape = (NL, B, H)
        if hx is None:
            h0 = np.zeros(state_shape, dt)
            c0 = np.zeros(state_shape, dt)
        else:
            try:
                h0, c0 = hx
            except (TypeError, ValueError):
                raise TypeError("fastdl.nn.LSTM: hx must be a pair (h0, c0)") from None
            h0 = np.asarray(h0)
            c0 = np.asarray(c0)
            if h0.shape != state_shape or c0.shape != state_shape:
                raise ValueError(f"fastdl.nn.LSTM: h0 {h0.shape} and c0 {c0.shape} must "
                                 f"have shape (num_layers, batch, hidden) = {state_shape}")
            h0 = np.ascontiguousarray(h0, dtype=dt)
            c0 = np.ascontiguousarray(c0, dtype=dt)
        inp = np.ascontiguousarray(x, dtype=dt)
        caches = []
        hn = np.empty(state_shape, dt)
        cn = np.empty(state_shape, dt)
        for l in range(NL):
            w_ih, w_hh, b = self._layer(l)
            G = fastdl.linear(inp, w_ih, b)
            if G.ndim != 3 or not G.flags.c_contiguous:
                G = np.ascontiguousarray(G.reshape(B, T, 4 * H))
            hs = np.empty((B, T, H), dt)
            cs = np.empty((B, T, H), dt)
            h, c = h0[l], c0[l]
            for t in range(T):
                _add_matmul(h, w_hh, G[:, t])
                _forward_rows(G[:, t], c, hs[:, t], cs[:, t])
                h, c = hs[:, t], cs[:, t]
            hn[l] = h
            cn[l] = c
            caches.append((inp, G, hs, cs))
            inp = hs
        self._cache = (caches, h0, c0, dt)
        return inp, (hn, cn)

    def backward(self, dy, dh_n=None, dc_n=None):
        caches, h0, c0, dt = self._cached()
        inp0, G0, hs0, _ = caches[0]
        B, T, H, NL = inp0.shape[0], inp0.shape[1], self.hidden_size, self.num_layers
        seq_shape, state_shape = (B, T, H), (NL, B, H)
        grads = []
        for name, g, shape in (("dy", dy, seq_shape), ("dh_n", dh_n, state_shape),
                               ("dc_n", dc_n, state_shape)):
            if g is not None:
                g = np.asarray(g)
                if g.shape != shape:
                    raise ValueError(f"fastdl.nn.LSTM.backward: {name} has shape {g.shape}, "
                                     f"expected {shape}")
                g = np.ascontiguousarray(g, dtype=dt)
            grads.append(g)
        dH, dh_n, dc_n = grads
        dh0 = np.empty(state_shape, dt)
        dc0 = np.empty(state_shape, dt)
        for l in range(NL - 1, -1, -1):
            inp, G, hs, cs = caches[l]
            w_ih, w_hh, b = self._layer(l)
            whh_t = w_hh.T
            dG = G.copy()  # the activated gates become d(gates) in place; the cache stays
            dh = np.zeros((B, H), dt) if dh_n is None else dh_n[l]
            dc = np.zeros((B, H), dt) if dc_n is None else dc_n[l]
            for t in range(T - 1, -1, -1):
                dh_t = dh if dH is None else fastdl.add(dH[:, t], dh)
                c_prev = cs[:, t - 1] if t > 0 else c0[l]
                dc_prev = np.empty((B, H), dt)
                _backward_rows(dG[:, t], c_prev, dh_t, dc, dc_prev)
                dh = fastdl.matmul(dG[:, t], whh_t)
                dc = dc_prev
            dh0[l] = dh
            dc0[l] = dc
            dx, dw_ih, db = fastdl.linear_backward(dG, inp, w_ih,
                                                   need_bias=b is not None)
            if T:
                h_prev = np.concatenate([h0[l][:, None, :], hs[:, :T - 1]], axis=1)
                dw_hh = fastdl.matmul(h_prev.reshape(B * T, H).T, dG.reshape(B * T, 4 * H))
            else:
                dw_hh = np.zeros_like(w_hh)
            self._accumulate(self._grads[f"weight_ih_l{l}"], dw_ih)
            self._accumulate(self._grads[f"weight_hh_l{l}"], dw_hh)
            if b is not None:
                self._accumulate(self._grads[f"bias_l{l}"], db)
            dH = dx
        self.hx_grad = (dh0, dc0)
        return dH

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
