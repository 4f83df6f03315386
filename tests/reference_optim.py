"""Plain NumPy references for fastdl.optim and the penalties (cheat-sheet formulas).

Each update takes and returns float64 arrays (new values, nothing in place), in the order
include/fastdl/optim.h documents; Adam divides by the bias corrections as the cheat sheet does
(fastdl multiplies by their reciprocals), so fastdl matches these to rounding.
"""

import numpy as np


def sgd(w, g, lr, weight_decay=0.0):
    d = g + weight_decay * w if weight_decay else g
    return w - lr * d


def sgd_momentum(w, g, buf, lr, momentum, weight_decay=0.0):
    """PyTorch's SGD with momentum (dampening 0): returns (w, buf)."""
    d = g + weight_decay * w if weight_decay else g
    buf = momentum * buf + d
    return w - lr * buf, buf


def momentum(w, g, v, lr, beta=0.9, weight_decay=0.0):
    """Cheat sheet: v = beta * v - lr * g; w = w + v. Returns (w, v)."""
    d = g + weight_decay * w if weight_decay else g
    v = beta * v - lr * d
    return w + v, v


def adam(w, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
         decoupled=False):
    """Cheat sheet Adam; weight decay as L2 in the gradient or decoupled (AdamW).
    Returns (w, m, v)."""
    if weight_decay and decoupled:
        w = w * (1 - lr * weight_decay)
    elif weight_decay:
        g = g + weight_decay * w
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g**2
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return w, m, v


def total_norm(grads):
    return float(np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in grads)))


def clip_grad_norm(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_ semantics: returns (norm, clipped grads)."""
    norm = total_norm(grads)
    coef = max_norm / (norm + 1e-6)
    if coef < 1 or np.isnan(coef):
        return norm, [np.asarray(g, np.float64) * coef for g in grads]
    return norm, [np.asarray(g, np.float64) for g in grads]


def l1_penalty(w, lam):
    return lam * np.sum(np.abs(w))


def l2_penalty(w, lam):
    return lam * np.sum(w**2)


def l1_penalty_grad(w, lam):
    return lam * np.sign(w)


def l2_penalty_grad(w, lam):
    return 2 * lam * w
