"""Per-family cases for compare.py: each module defines cases(Case) -> a list of Case objects (see compare.py: Case and the linalg cases as examples)."""
