"""``python -m fastdl``: the build report (``--info``)."""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fastdl",
        description="fastdl: the math of deep learning for NumPy users, at machine speed.")
    parser.add_argument("--info", action="store_true",
                        help="print version, compiler, OpenMP, BLAS, SIMD level, CUDA")
    args = parser.parse_args(argv)
    import fastdl
    if args.info or len(sys.argv if argv is None else argv) <= 1:
        fastdl.show_config()
    return 0


if __name__ == "__main__":
    sys.exit(main())
