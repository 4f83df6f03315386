"""``python -m fastdl`` (also the ``fastdl`` command): the build report, then every public op
checked against its NumPy formula on random data and timed against NumPy (and PyTorch CPU when
installed), ending with a table; exit status 1 if any check fails.

    python -m fastdl            full sizes (a few minutes on 2 cores)
    python -m fastdl --quick    small sizes, under a minute
    python -m fastdl --json     machine-readable results on stdout
    python -m fastdl --plot speedups.png   a bar chart of the speed-ups (needs matplotlib)
    python -m fastdl --info     the build report only
"""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fastdl",
        description="fastdl: the math of deep learning for NumPy users, at machine speed. "
                    "Without options: check every op against NumPy and time it.")
    parser.add_argument("--info", action="store_true",
                        help="only print version, compiler, OpenMP, BLAS, SIMD level, CUDA")
    parser.add_argument("--quick", action="store_true", help="small sizes (under a minute)")
    parser.add_argument("--json", action="store_true", help="results as JSON on stdout")
    parser.add_argument("--plot", metavar="FILE.png", help="bar chart of the speed-ups "
                        "(needs matplotlib)")
    parser.add_argument("--no-torch", action="store_true",
                        help="leave PyTorch out even where it is installed")
    parser.add_argument("--match", metavar="TEXT", help="only ops whose name contains TEXT")
    args = parser.parse_args(argv)
    import fastdl
    if args.info:
        fastdl.show_config()
        return 0
    from fastdl._selfcheck import main as selfcheck
    return selfcheck(quick=args.quick, as_json=args.json, plot_path=args.plot,
                     use_torch=not args.no_torch, match=args.match)


if __name__ == "__main__":
    sys.exit(main())
