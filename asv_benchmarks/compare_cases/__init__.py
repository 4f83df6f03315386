"""Per-family cases for compare.py: each module defines cases() -> list of compare.Case."""
