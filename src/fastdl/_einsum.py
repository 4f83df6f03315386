"""``fastdl.einsum``: NumPy's einsum, with (batched) GEMM-shaped contractions sent to BLAS.

A two-operand contraction maps to a batched GEMM when every index is one of
  batch: in both operands and the output;  M: in the first operand and the output only;
  N: in the second operand and the output only;  K: in both operands, not in the output;
and no index repeats within one operand. The operands are then transposed (views) into
(batch, M, K) and (batch, K, N), reshaped (a copy only where the strides force one) and
multiplied by fastdl.matmul. Every other contraction (one operand, three or more, traces,
indices summed within one operand, size-1 broadcasting) is NumPy's, on the promoted operands.
"""

import functools
import string

import numpy as np

from fastdl._ext._linalg import matmul
from fastdl._ext._common import to_float_array

_LETTERS = set(string.ascii_letters)


@functools.lru_cache(maxsize=512)
def _plan(subscripts, ndim_a, ndim_b):
    """Index roles for a two-operand contraction, or None when it is not a batched GEMM."""
    spec = subscripts.replace(" ", "")
    if "->" in spec:
        inputs, output = spec.split("->")
        explicit = True
    else:
        inputs, output, explicit = spec, None, False
    terms = inputs.split(",")
    if len(terms) != 2 or "->" in (output or ""):
        return None
    ndims = (ndim_a, ndim_b)
    # Expand "..." into private index names, right-aligned across operands as NumPy does.
    ell_len = 0
    expanded = []
    for term, nd in zip(terms, ndims):
        if term.count("...") > 1 or term.replace("...", "").strip(string.ascii_letters):
            return None
        if "..." in term:
            n_ell = nd - (len(term) - 3)
            if n_ell < 0:
                return None
            ell_len = max(ell_len, n_ell)
        elif len(term) != nd:
            return None
        expanded.append(term)
    ell_names = [f"\0{i}" for i in range(ell_len)]
    labels = []
    for term, nd in zip(expanded, ndims):
        if "..." in term:
            left, right = term.split("...")
            n_ell = nd - len(left) - len(right)
            labels.append(list(left) + ell_names[ell_len - n_ell:] + list(right))
        else:
            labels.append(list(term))
    if explicit:
        if output.count("...") > 1 or output.replace("...", "").strip(string.ascii_letters):
            return None
        if "..." in output:
            left, right = output.split("...")
            out_labels = list(left) + ell_names + list(right)
        else:
            if ell_len:
                return None  # NumPy would sum the broadcast dims; leave that to NumPy
            out_labels = list(output)
    else:
        counts = {}
        for lab in labels[0] + labels[1]:
            counts[lab] = counts.get(lab, 0) + 1
        out_labels = ell_names + sorted(lab for lab, c in counts.items()
                                        if c == 1 and lab in _LETTERS)
    a_labels, b_labels = labels
    if len(set(a_labels)) != len(a_labels) or len(set(b_labels)) != len(b_labels):
        return None
    if len(set(out_labels)) != len(out_labels):
        return None
    a_set, b_set, o_set = set(a_labels), set(b_labels), set(out_labels)
    if not o_set <= (a_set | b_set):
        return None
    batch = [lab for lab in out_labels if lab in a_set and lab in b_set]
    m_idx = [lab for lab in out_labels if lab in a_set and lab not in b_set]
    n_idx = [lab for lab in out_labels if lab in b_set and lab not in a_set]
    k_idx = [lab for lab in a_labels if lab in b_set and lab not in o_set]
    if set(a_labels) != set(batch) | set(m_idx) | set(k_idx):
        return None  # an index of a summed within a alone
    if set(b_labels) != set(batch) | set(n_idx) | set(k_idx):
        return None
    perm_a = tuple(a_labels.index(lab) for lab in batch + m_idx + k_idx)
    perm_b = tuple(b_labels.index(lab) for lab in batch + k_idx + n_idx)
    natural = batch + m_idx + n_idx
    perm_out = tuple(natural.index(lab) for lab in out_labels)
    return (tuple(a_labels), tuple(b_labels), len(batch), len(m_idx), len(k_idx),
            len(n_idx), perm_a, perm_b, perm_out)


def _gemm_einsum(plan, a, b, out):
    a_labels, b_labels, nb, nm, nk, nn, perm_a, perm_b, perm_out = plan
    sizes = {}
    for lab, size in list(zip(a_labels, a.shape)) + list(zip(b_labels, b.shape)):
        if sizes.setdefault(lab, size) != size:
            return None  # size-1 broadcasting of a named index: NumPy's rules
    at = a.transpose(perm_a)
    bt = b.transpose(perm_b)
    bshape = at.shape[:nb]
    mshape = at.shape[nb:nb + nm]
    kshape = at.shape[nb + nm:]
    nshape = bt.shape[nb + nk:]
    m = int(np.prod(mshape, dtype=np.int64))
    k = int(np.prod(kshape, dtype=np.int64))
    n = int(np.prod(nshape, dtype=np.int64))
    a3 = at.reshape(bshape + (m, k))
    b3 = bt.reshape(bshape + (k, n))
    natural_shape = bshape + mshape + nshape
    if out is not None:
        expected = tuple(natural_shape[i] for i in perm_out)
        if out.shape != expected:
            raise ValueError(f"fastdl.einsum: out has shape {out.shape}, expected {expected}")
        if perm_out == tuple(range(len(perm_out))):
            try:
                out3 = np.reshape(out, bshape + (m, n), copy=False)
            except ValueError:
                out3 = None  # its strides do not fold; write through a temporary
            if out3 is not None:
                matmul(a3, b3, out=out3)
                return out
    result = matmul(a3, b3).reshape(natural_shape).transpose(perm_out)
    if out is not None:
        np.copyto(out, result)
        return out
    if result.ndim == 0:
        return result[()]  # a full contraction gives a NumPy scalar, as np.einsum does
    return result


def einsum(subscripts, *operands, out=None, **kwargs):
    """Einstein summation with ``numpy.einsum`` semantics.

    Contractions of two operands that are (batched) matrix products, such as
    ``'bij,bjk->bik'``, ``'ij,jk'`` or ``'bhqd,bhkd->bhqk'``, run on fastdl's BLAS path;
    the others are computed by ``numpy.einsum`` (with ``optimize=True`` for three operands
    or more). Operands follow fastdl's dtype rules (integers and bools become float64).
    """
    if not isinstance(subscripts, str):
        raise TypeError(f"fastdl.einsum: subscripts must be a str, got "
                        f"{type(subscripts).__name__}")
    ops = [to_float_array(op, "einsum", f"operands[{i}]") for i, op in enumerate(operands)]
    if len(ops) == 2 and not kwargs:
        if ops[0].dtype != ops[1].dtype:
            ops = [op.astype(np.float64) for op in ops]
        if out is not None:
            _check_einsum_out(out, ops[0].dtype)
        plan = _plan(subscripts, ops[0].ndim, ops[1].ndim)
        if plan is not None:
            result = _gemm_einsum(plan, ops[0], ops[1], out)
            if result is not None:
                return result
    if len(ops) > 2:
        kwargs.setdefault("optimize", True)
    if out is not None:
        return np.einsum(subscripts, *ops, out=out, **kwargs)
    return np.einsum(subscripts, *ops, **kwargs)


def _check_einsum_out(out, dtype):
    if not isinstance(out, np.ndarray):
        raise TypeError(f"fastdl.einsum: out must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"fastdl.einsum: out has dtype {out.dtype}, expected {dtype}")
    if not out.flags.writeable:
        raise ValueError("fastdl.einsum: out is read-only")
