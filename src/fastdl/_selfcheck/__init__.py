"""``python -m fastdl``: every public op checked against its NumPy formula and timed against
NumPy (and PyTorch CPU where installed). See ``runner.main``."""

from fastdl._selfcheck.runner import main

__all__ = ["main"]
