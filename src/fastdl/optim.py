"""fastdl.optim: in-place optimiser updates, optimiser classes, gradient clipping, penalties.

Functional updates (each one pass over its arrays; w, g and the state may also be equal-length
lists of arrays, updated in one multi-tensor pass):
    sgd_(w, g, lr, weight_decay=0.0, *, momentum=0.0, buf=None)
    momentum_(w, g, v, lr, beta=0.9, weight_decay=0.0)
    adam_(w, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
          decoupled=False)
Classes over a list of parameter arrays, updated in place by ``step(grads)``:
    SGD, Momentum, Adam, AdamW
``clip_grad_norm_(grads, max_norm)`` and the penalties ``l1_penalty``, ``l2_penalty``,
``l1_penalty_grad``, ``l2_penalty_grad``.

The exact formulas (in the arrays' dtype, constants rounded from double) are in
``include/fastdl/optim.h``. Arrays updated in place must not share memory with any other
argument of the call (``g`` that is ``w`` raises ValueError).

The classes also take CUDA device arrays (anything with ``__cuda_array_interface__``: CuPy,
PyTorch CUDA tensors, fastdl.cuda.DeviceArray) as parameters: the state is then kept in device
arrays of the same kind and ``step`` updates every parameter with one multi-tensor kernel
launch per dtype (fastdl._ext._cuda._OptimGPU); ``state_dict`` returns NumPy copies and
``load_state_dict`` copies NumPy values back to the device.
"""

import numpy as np

from fastdl._ext._optim import (
    _Optimizer, check_hyper, sgd_, momentum_, adam_, clip_grad_norm_,
    l1_penalty, l2_penalty, l1_penalty_grad, l2_penalty_grad,
)

__all__ = ["sgd_", "momentum_", "adam_", "SGD", "Momentum", "Adam", "AdamW",
           "clip_grad_norm_", "l1_penalty", "l2_penalty", "l1_penalty_grad",
           "l2_penalty_grad"]

# _Optimizer's operation codes (OP_* in _optim.pyx)
_OP_SGD, _OP_SGDM, _OP_MOMENTUM, _OP_ADAM = 0, 1, 2, 3
# public hyper-parameter name -> the attribute of _Optimizer that the step reads
_ATTR = {"lr": "lr", "momentum": "mu", "beta": "mu", "weight_decay": "wd", "beta1": "b1",
         "beta2": "b2", "eps": "eps"}


def _is_device(x):
    return not isinstance(x, np.ndarray) and hasattr(x, "__cuda_array_interface__")


def _gpu_engine(params, op, func):
    """The GPU engine over device parameters (RuntimeError when fastdl has no CUDA build)."""
    try:
        from fastdl._ext import _cuda
    except ImportError:
        raise RuntimeError(
            f"fastdl.optim.{func}: got CUDA device arrays, but this build of fastdl has no "
            f"CUDA extension (rebuild with FASTDL_CUDA=1 and the CUDA toolkit), or pass NumPy "
            f"arrays") from None
    return _cuda._OptimGPU(params, op, func)


class _Base(_Optimizer):
    """state_dict / load_state_dict / zero_state shared by the optimisers.

    ``state_dict()`` is a flat dict of plain values that ``np.savez(path, **d)`` can store:
    ``"t"`` (the step count), the hyper-parameters, and a copy of each state array under
    ``"<name>.<i>"``. ``load_state_dict(d)`` accepts it back (also as loaded by ``np.load``,
    scalars as 0-d arrays), validates all of it first, then copies it into the live state.
    """

    _state_names = ()
    _hyper = ()
    _gpu = None        # the device engine when the parameters are CUDA device arrays

    def _setup(self, params, op, func):
        if not isinstance(params, np.ndarray) and not _is_device(params):
            try:
                params = list(params)
            except TypeError:
                pass          # _Optimizer._setup raises the CPU's TypeError
        if _is_device(params):
            params = [params]
        if isinstance(params, list) and params and _is_device(params[0]):
            self._gpu = _gpu_engine(params, op, func)
            self.t = 0
            # an instance attribute: the CPU path keeps calling _Optimizer.step directly
            self.step = self._gpu_step
            return
        _Optimizer._setup(self, params, op, func)

    @property
    def params(self):
        """The parameter arrays, in order (a tuple)."""
        if self._gpu is not None:
            return self._gpu.params
        return _Optimizer.params.__get__(self, type(self))

    @property
    def _state(self):
        if self._gpu is not None:
            return self._gpu.state
        return _Optimizer._state.__get__(self, type(self))

    def _gpu_step(self, grads):
        """step() of device parameters: one multi-tensor launch per dtype."""
        if isinstance(grads, np.ndarray) or _is_device(grads):
            grads = (grads,)
        if not isinstance(grads, (list, tuple)):
            raise TypeError(f"fastdl.optim.step: grads must be a list of arrays, got "
                            f"{type(grads).__name__}")
        t = self.t + 1
        self._gpu.step(grads, self.lr, self.wd, self.mu, self.b1, self.b2, self.eps,
                       self.decoupled, t)
        self.t = t

    def zero_state(self):
        """Zero every state array and the step count (the parameters are left alone)."""
        if self._gpu is not None:
            self._gpu.zero_state()
        else:
            for arrays in self._state:
                for a in arrays:
                    a.fill(0)
        self.t = 0

    def state_dict(self):
        d = {"t": int(self.t)}
        for name in self._hyper:
            d[name] = float(getattr(self, name))
        if self._gpu is not None:
            state = self._gpu.state_to_host()      # fresh NumPy copies
        else:
            state = [[a.copy() for a in arrays] for arrays in self._state]
        for name, arrays in zip(self._state_names, state):
            for i, a in enumerate(arrays):
                d[f"{name}.{i}"] = a
        return d

    def load_state_dict(self, d):
        func = f"fastdl.optim.{type(self).__name__}.load_state_dict"
        keys = ["t", *self._hyper] + [f"{name}.{i}" for name in self._state_names
                                       for i in range(len(self.params))]
        missing = [k for k in keys if k not in d]
        if missing:
            raise ValueError(f"{func}: missing keys {missing}")
        extra = sorted(set(d) - set(keys))
        if extra:
            raise ValueError(f"{func}: unexpected keys {extra}")
        t = np.asarray(d["t"])
        if t.shape != () or t.dtype.kind not in "iu" or int(t) < 0:
            raise ValueError(f"{func}: t must be a non-negative int, got {d['t']!r}")
        hyper = {}
        for name in self._hyper:
            value = np.asarray(d[name])
            if value.shape != () or value.dtype.kind not in "fiu":
                raise ValueError(f"{func}: {name} must be a number, got {d[name]!r}")
            hyper[name] = float(value)
        self._check(hyper)
        if self._gpu is not None:
            meta = self._gpu.state_meta()
        else:
            meta = [[(a.shape, a.dtype) for a in arrays] for arrays in self._state]
        new = []
        for name, arrays in zip(self._state_names, meta):
            row = []
            for i, (shape, dtype) in enumerate(arrays):
                src = np.asarray(d[f"{name}.{i}"])
                if src.shape != shape or src.dtype != dtype:
                    raise ValueError(f"{func}: {name}.{i} has shape {src.shape} and dtype "
                                     f"{src.dtype}, expected {shape} and {dtype}")
                row.append(src)
            new.append(row)
        if self._gpu is not None:
            self._gpu.load_state(new)
        else:
            for arrays, row in zip(self._state, new):
                for a, src in zip(arrays, row):
                    np.copyto(a, src)
        for name, value in hyper.items():
            setattr(self, _ATTR[name], value)
        self.t = int(t)

    def _check(self, hyper):
        raise NotImplementedError


class SGD(_Base):
    """PyTorch's SGD (dampening 0, not Nesterov): d = g + weight_decay * w; with momentum,
    buf = momentum * buf + d and w -= lr * buf, else w -= lr * d."""

    _hyper = ("lr", "momentum", "weight_decay")

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        check_hyper("optim.SGD", lr=lr, momentum=momentum, weight_decay=weight_decay)
        self._setup(params, _OP_SGDM if momentum != 0 else _OP_SGD, "SGD")
        self._state_names = ("momentum_buffer",) if momentum != 0 else ()
        self.lr, self.mu, self.wd = float(lr), float(momentum), float(weight_decay)

    momentum = property(lambda self: self.mu)
    weight_decay = property(lambda self: self.wd)

    def _check(self, hyper):
        check_hyper("optim.SGD", lr=hyper["lr"], momentum=hyper["momentum"],
                    weight_decay=hyper["weight_decay"])
        if (hyper["momentum"] != 0) != (self.mu != 0):
            raise ValueError("fastdl.optim.SGD.load_state_dict: momentum 0 and momentum > 0 "
                             "keep different state; build the optimiser with the saved "
                             "momentum")


class Momentum(_Base):
    """The cheat sheet's momentum: v = beta * v - lr * g; w = w + v."""

    _state_names = ("v",)
    _hyper = ("lr", "beta")

    def __init__(self, params, lr, beta=0.9):
        check_hyper("optim.Momentum", lr=lr, beta=beta)
        self._setup(params, _OP_MOMENTUM, "Momentum")
        self.lr, self.mu = float(lr), float(beta)

    beta = property(lambda self: self.mu)

    def _check(self, hyper):
        check_hyper("optim.Momentum", lr=hyper["lr"], beta=hyper["beta"])


class Adam(_Base):
    """The cheat sheet's Adam (bias-corrected), weight_decay as L2 added to the gradient
    (torch.optim.Adam). The step count t is kept here and starts at 1 on the first step."""

    _state_names = ("m", "v")
    _hyper = ("lr", "beta1", "beta2", "eps", "weight_decay")
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        name = type(self).__name__
        check_hyper(f"optim.{name}", lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self._setup(params, _OP_ADAM, name)
        self.lr, self.b1, self.b2 = float(lr), float(betas[0]), float(betas[1])
        self.eps, self.wd, self.decoupled = float(eps), float(weight_decay), self._decoupled

    betas = property(lambda self: (self.b1, self.b2))
    beta1 = property(lambda self: self.b1)
    beta2 = property(lambda self: self.b2)
    weight_decay = property(lambda self: self.wd)

    def _check(self, hyper):
        check_hyper(f"optim.{type(self).__name__}", lr=hyper["lr"],
                    betas=(hyper["beta1"], hyper["beta2"]), eps=hyper["eps"],
                    weight_decay=hyper["weight_decay"])


class AdamW(Adam):
    """Adam with decoupled weight decay: w is first scaled by 1 - lr * weight_decay
    (PyTorch's AdamW, default weight_decay 1e-2)."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)
