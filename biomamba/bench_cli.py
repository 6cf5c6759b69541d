"""Run a benchmark script from bench/ (each prints a side-by-side table against its peer).

  biomamba bench                 list the benchmarks
  biomamba bench cpu_train -- --seq-lens 256
"""
import runpy
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"


def add_arguments(parser):
    parser.add_argument("name", nargs="?", help="benchmark name (a file in bench/ without .py)")
    parser.add_argument("args", nargs="*", help="arguments passed to the script (after --)")


def run(args):
    if not BENCH_DIR.is_dir():
        print(f"error: the benchmarks live in biomamba's source checkout (bench/), not in an installed wheel "
              f"({BENCH_DIR} does not exist); run `biomamba bench` from a checkout (pip install -e .)",
              file=sys.stderr)
        return 2
    scripts = sorted(p.stem for p in BENCH_DIR.glob("*.py"))
    if not args.name:
        print("benchmarks: " + ", ".join(scripts))
        return 0
    if args.name not in scripts:
        print(f"error: no benchmark {args.name!r} in {BENCH_DIR}; choose one of {', '.join(scripts)}",
              file=sys.stderr)
        return 2
    sys.argv = [str(BENCH_DIR / f"{args.name}.py"), *args.args]
    runpy.run_path(sys.argv[0], run_name="__main__")
    return 0
