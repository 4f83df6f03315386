"""fastdl asv benchmarks: one bench_<family>.py per op family; shared helpers in _common.py."""
