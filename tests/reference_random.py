"""Plain NumPy references for fastdl's counter-based RNG, dropout and init.

* ``philox4x32_10(counter, key)``: Philox4x32-10 (Salmon et al., SC 2011) on arrays of
  counters, written from the published round function, independent of the C code.
* ``philox_words(seed, first, n)``: fastdl's stream of a seed (see include/fastdl/philox.h):
  word i is word ``i % 4`` of the block with counter ``(lo32(i // 4), hi32(i // 4), 0, 0)``
  and key ``(lo32(seed), hi32(seed))``.
* ``dropout_ref(x, p, seed)``: the keep rule (word >= ceil(p * 2**32)) and the inverted
  scaling ``x * dtype(1 / (1 - p))`` where kept, ``0`` where dropped; also the cheat sheet's
  ``X * mask / keep_prob`` in float64 for a tolerance check.
* ``fans_ref(shape)``: fan_in/fan_out of a weight shape as API.md defines them.
"""

import math

import numpy as np

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK32 = 0xFFFFFFFF


def philox4x32_10(counter, key):
    """Philox4x32-10 of counters ``counter`` (array-like ``(..., 4)`` of 32-bit words) under
    ``key`` (two 32-bit words); returns ``(..., 4)`` uint32."""
    c = np.asarray(counter, dtype=np.uint64)
    c0, c1, c2, c3 = (c[..., j].copy() for j in range(4))
    k0, k1 = int(key[0]), int(key[1])
    m0, m1, mask = np.uint64(M0), np.uint64(M1), np.uint64(MASK32)
    for r in range(10):
        p0 = c0 * m0              # < 2**64: exact in uint64
        p1 = c2 * m1
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0), p1 & mask,
                          (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1), p0 & mask)
        k0 = (k0 + W0) & MASK32
        k1 = (k1 + W1) & MASK32
    return np.stack([c0, c1, c2, c3], axis=-1).astype(np.uint32)


def philox_words(seed, first, n):
    """Words ``first .. first + n - 1`` of the stream of ``seed`` (uint32)."""
    seed = int(seed)
    idx = np.uint64(first) + np.arange(n, dtype=np.uint64)
    block = idx >> np.uint64(2)
    ctr = np.stack([block & np.uint64(MASK32), block >> np.uint64(32),
                    np.zeros_like(block), np.zeros_like(block)], axis=-1)
    out = philox4x32_10(ctr, (seed & MASK32, seed >> 32))
    return out[np.arange(n), (idx & np.uint64(3)).astype(np.intp)]


def keep_mask_ref(shape, p, seed):
    """The bool keep-mask: element i (C order) kept iff word i >= ceil(p * 2**32)."""
    size = math.prod(shape)
    thr = math.ceil(p * 2.0 ** 32)
    words = philox_words(seed, 0, size).astype(np.uint64)
    return (words >= np.uint64(thr) if thr < 2 ** 32 else np.zeros(size, bool)).reshape(shape)


def dropout_ref(x, p, seed):
    """(y, keep) with y exactly what fastdl computes: x * dtype(1 / (1 - p)) where kept
    (one multiply in x's dtype), +0.0 where dropped."""
    x = np.asarray(x)
    keep = keep_mask_ref(x.shape, p, seed)
    scale = x.dtype.type(1.0 / (1.0 - p))
    y = np.where(keep, x * scale, x.dtype.type(0))
    return y, keep


def dropout_f64(x, p, keep):
    """Inverted dropout in float64: x / (1 - p) where kept, 0 where dropped."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(keep, x / (1.0 - p), 0.0)


def fans_ref(shape):
    """(fan_in, fan_out): a 2-D shape is (fan_in, fan_out) (linear's w, the cheat sheet's
    layout); a conv weight (O, C/groups, *kernel) has fan_in = C/groups * prod(kernel),
    fan_out = O * prod(kernel)."""
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def init_samples_ref(shape, dtype, seed, kind, scale):
    """fastdl.init's samples from the stream of ``seed`` (see include/fastdl/philox.h), the
    transforms in float64 with NumPy's log/sqrt/cos/sin: ``kind='normal'`` (standard deviation
    ``scale``, Box-Muller pairs) or ``'uniform'`` (on ``[-scale, scale]``). The uniforms are
    formed as the C code forms them (float32 rounding of the radius uniform included)."""
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    wpe = 1 if dtype == np.float32 else 2
    even = size + (size & 1)
    w = philox_words(seed, 0, wpe * even).astype(np.uint64)
    if kind == "uniform":
        if dtype == np.float32:
            u = (w >> np.uint64(8)).astype(np.float64) * 2.0 ** -24
        else:
            m = (w[0::2] << np.uint64(21)) | (w[1::2] >> np.uint64(11))
            u = m.astype(np.float64) * 2.0 ** -53
        return (u * 2 * scale - scale)[:size].reshape(shape)
    if dtype == np.float32:
        u1 = (w[0::2].astype(np.float32) * np.float32(2.0 ** -32)
              + np.float32(2.0 ** -33)).astype(np.float64)
        a = w[1::2]
        q = (a >> np.uint64(30)).astype(np.float64)
        f = (a & np.uint64(0x3FFFFFFF)).astype(np.float32).astype(np.float64) * 2.0 ** -30
    else:
        m1 = (w[0::4] << np.uint64(21)) | (w[1::4] >> np.uint64(11))
        m2 = (w[2::4] << np.uint64(21)) | (w[3::4] >> np.uint64(11))
        u1 = m1.astype(np.float64) * 2.0 ** -53 + 2.0 ** -54
        q = (m2 >> np.uint64(51)).astype(np.float64)
        f = (m2 & np.uint64((1 << 51) - 1)).astype(np.float64) * 2.0 ** -51
    r = np.sqrt(np.maximum(-2.0 * np.log(u1), 0.0)) * scale
    theta = (q + f) * (np.pi / 2)
    z = np.empty(2 * r.size)
    z[0::2] = r * np.cos(theta)
    z[1::2] = r * np.sin(theta)
    return z[:size].reshape(shape)
