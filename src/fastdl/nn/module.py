"""The Module base of ``fastdl.nn``: parameters, gradients, buffers, modes, state.

Conventions (the same for every layer):

* Parameters and their gradients are plain NumPy arrays owned by the module. A module
  registers them by name (``_param``); ``parameters()`` and ``gradients()`` return the LIVE
  arrays, depth first in registration order, in the same order, so
  ``opt = fastdl.optim.Adam(model.parameters()); opt.step(model.gradients())`` updates the
  model in place. Nothing in fastdl.nn ever rebinds a parameter or gradient array: loading a
  state, zeroing gradients and accumulating all write into the existing arrays.
* ``forward(x)`` (also ``module(x)``) in training mode caches what ``backward`` needs;
  ``backward(dy)`` returns dx and ACCUMULATES into the gradient arrays (PyTorch semantics:
  gradients add up over backward calls until ``zero_grad()``). A backward consumes the cache
  of the latest forward; calling it without a forward raises ``RuntimeError``.
* In eval mode (``eval()``) forward caches too, so a backward in eval mode (e.g. the
  gradient with respect to an input) is still available, with eval-mode semantics.
* Buffers (running statistics) are state that is not trained: in ``state_dict`` but not in
  ``parameters()``.
* A layer with parameters computes in its own dtype (``dtype=``, float32 by default): a real
  input of another dtype (float64 data from NumPy, integers) is converted to it on entry,
  as Keras layers cast their inputs, so float64 data never silently turns a float32 model
  into a float64 one (nor fails in BatchNorm's float32 running statistics). Complex and
  other dtypes raise ``TypeError``. Layers without parameters keep their input's dtype.
"""

import numpy as np

__all__ = ["Module"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def check_dtype(dtype, cls):
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"fastdl.nn.{cls}: dtype {dtype!r} is not a NumPy dtype ({exc})") \
            from None
    if dt not in _FLOATS:
        raise TypeError(f"fastdl.nn.{cls}: dtype must be float32 or float64, got {dt}")
    return dt


def as_input(x, dtype, cls, name="x"):
    """x as an array of the layer's dtype (see the module docstring)."""
    a = np.asarray(x)
    if a.dtype.kind not in "fiub" or a.dtype == np.float16 or a.dtype.itemsize > 8:
        raise TypeError(f"fastdl.nn.{cls}: {name} has dtype {a.dtype}; expected a real "
                        f"(float32/float64, integer or bool) array")
    return a.astype(dtype, copy=False)


def make_rng(seed, rng, cls):
    """One Generator from ``seed`` (int or None) or ``rng`` (a Generator), not both."""
    if seed is not None and rng is not None:
        raise TypeError(f"fastdl.nn.{cls}: give seed= or rng=, not both")
    if rng is not None:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"fastdl.nn.{cls}: rng must be a numpy.random.Generator, got "
                            f"{type(rng).__name__}")
        return rng
    return np.random.default_rng(seed)


def positive_int(value, name, cls):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"fastdl.nn.{cls}: {name} must be an int, got {value!r}")
    if value <= 0:
        raise ValueError(f"fastdl.nn.{cls}: {name} must be positive, got {value}")
    return int(value)


class Module:
    """Base of every fastdl.nn layer (see the module docstring for the conventions)."""

    def __init__(self):
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_grads", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    # -- registration -------------------------------------------------------------------
    def __setattr__(self, name, value):
        if isinstance(value, Module):
            self.__dict__.get("_modules", {})[name] = value
        object.__setattr__(self, name, value)

    def register_parameter(self, name, value):
        """Register a parameter (a C-contiguous copy of ``value`` unless it is one) and its
        zeroed gradient under ``name``, as attribute ``self.<name>``; returns the array.
        This is how a custom layer declares what it trains."""
        return self._param(name, value)

    def register_buffer(self, name, value):
        """Register state that is saved but not trained (e.g. running statistics)."""
        return self._buffer(name, value)

    def _param(self, name, value):
        value = np.ascontiguousarray(value)
        self._params[name] = value
        self._grads[name] = np.zeros_like(value)
        object.__setattr__(self, name, value)
        return value

    def _buffer(self, name, value):
        value = np.ascontiguousarray(value)
        self._buffers[name] = value
        object.__setattr__(self, name, value)
        return value

    def grad(self, name):
        """The gradient array of this module's parameter ``name``."""
        return self._grads[name]

    def children(self):
        return list(self._modules.values())

    def named_parameters(self, prefix=""):
        out = [(prefix + k, v) for k, v in self._params.items()]
        for name, m in self._modules.items():
            out += m.named_parameters(f"{prefix}{name}.")
        return out

    def named_gradients(self, prefix=""):
        out = [(prefix + k, v) for k, v in self._grads.items()]
        for name, m in self._modules.items():
            out += m.named_gradients(f"{prefix}{name}.")
        return out

    def named_buffers(self, prefix=""):
        out = [(prefix + k, v) for k, v in self._buffers.items()]
        for name, m in self._modules.items():
            out += m.named_buffers(f"{prefix}{name}.")
        return out

    def parameters(self):
        """The live parameter arrays, depth first, in registration order."""
        return [v for _, v in self.named_parameters()]

    def gradients(self):
        """The live gradient arrays, in the order of ``parameters()``."""
        return [v for _, v in self.named_gradients()]

    def zero_grad(self):
        for g in self.gradients():
            g.fill(0)

    # -- modes --------------------------------------------------------------------------
    def train(self, mode=True):
        object.__setattr__(self, "training", bool(mode))
        for m in self._modules.values():
            m.train(mode)
        return self

    def eval(self):
        return self.train(False)

    # -- computation --------------------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, dy):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def _cached(self):
        cache = self.__dict__.get("_cache")
        if cache is None:
            raise RuntimeError(f"fastdl.nn.{type(self).__name__}.backward: no forward to "
                               "differentiate (call forward first)")
        return cache

    @staticmethod
    def _accumulate(grad, value):
        # In place: the gradient arrays are live (an optimiser holds them).
        np.add(grad, value, out=grad, casting="unsafe")

    # -- state --------------------------------------------------------------------------
    def state_dict(self):
        """Copies of every parameter and buffer, by dotted name (exact values)."""
        return {k: v.copy() for k, v in self.named_parameters() + self.named_buffers()}

    def load_state_dict(self, state):
        """Copy ``state`` into the live arrays. Every key must be present and no other,
        with the exact shape; values are cast to each array's dtype. Everything is checked
        before anything is written."""
        own = dict(self.named_parameters() + self.named_buffers())
        state = dict(state)
        missing = [k for k in own if k not in state]
        extra = [k for k in state if k not in own]
        if missing or extra:
            raise KeyError(f"fastdl.nn.{type(self).__name__}.load_state_dict: missing keys "
                           f"{missing}, unexpected keys {extra}")
        values = {}
        for k, arr in own.items():
            v = np.asarray(state[k])
            if v.shape != arr.shape:
                raise ValueError(f"fastdl.nn.{type(self).__name__}.load_state_dict: {k} has "
                                 f"shape {v.shape}, expected {arr.shape}")
            if v.dtype.kind not in "fiub":
                raise TypeError(f"fastdl.nn.{type(self).__name__}.load_state_dict: {k} has "
                                f"dtype {v.dtype}, expected a real number array")
            values[k] = v
        for k, arr in own.items():
            np.copyto(arr, values[k], casting="unsafe")
        return self

    def save(self, path):
        """``state_dict()`` as an uncompressed ``.npz`` file (bitwise exact)."""
        np.savez(path, **self.state_dict())

    def load(self, path):
        with np.load(path, allow_pickle=False) as data:
            return self.load_state_dict({k: data[k] for k in data.files})

    def __repr__(self):
        inner = "".join(f"\n  ({k}): " + repr(m).replace("\n", "\n  ")
                        for k, m in self._modules.items())
        extra = self.extra_repr()
        return f"{type(self).__name__}({extra}{inner}{chr(10) if inner else ''})"

    def extra_repr(self):
        return ""
