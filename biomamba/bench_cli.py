"""Run a benchmark script from bench/ (each prints a side-by-side table against its peer).

  biomamba bench                 list the benchmarks
  biomamba bench cpu_train -- --seq-lens 256
  biomamba bench --no-wandb --out runs/bench scan -- --quick

The tables a script hands over with `report_table` (bench/*.py do, next to printing them) go to
OUT/NAME.json and to a W&B run of job_type bench named NAME (files under --out, offline unless W&B
is configured; --no-wandb: none): each table as bench/NAME/TABLE and each ratio in it as the summary
number bench/NAME/TABLE/ROW/COLUMN, ROW being the row's key cells joined by spaces. Run on its own
(`python bench/x.py`) a script prints its tables and reports nothing.
"""
import json
import runpy
import sys
import time
from pathlib import Path

from biomamba import tracking
from biomamba.io import write_text

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"

_reported = None  # the tables of the script `biomamba bench` is running (a list); None otherwise


def report_table(name: str, columns, rows, *, key, ratios):
    """Hand a printed table to `biomamba bench` (nothing happens when the script runs on its own).
    `key`: the columns that tell rows apart; `ratios`: the columns holding ratios (None cells skipped)."""
    columns = list(columns)
    unknown = [c for c in (*key, *ratios) if c not in columns]
    if unknown:
        raise ValueError(f"report_table {name!r}: key/ratio columns {unknown} are not among the columns {columns}")
    if _reported is not None:
        _reported.append({"name": name, "columns": columns, "rows": [list(r) for r in rows],
                          "key": list(key), "ratios": list(ratios)})


def seconds(call) -> float:
    """The seconds one `call()` took: what the calls given to times_in_turns return."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def times_in_turns(calls: dict, rounds, warmups=1) -> dict:
    """{name: the seconds of each of its timed calls, in order}. calls: {name: a function running once and
    returning its seconds}; rounds, warmups: an int, or {name: int}. The untimed calls, then the timed ones,
    go in turns, one call of each name still owed one per round, so that a burst of load from other
    processes hits every name alike rather than whichever ran during it."""
    rounds = rounds if isinstance(rounds, dict) else dict.fromkeys(calls, rounds)
    warmups = warmups if isinstance(warmups, dict) else dict.fromkeys(calls, warmups)
    for round_ in range(max(warmups.values(), default=0)):
        for name, call in calls.items():
            if round_ < warmups[name]:
                call()
    times = {name: [] for name in calls}
    for round_ in range(max(rounds.values(), default=0)):
        for name, call in calls.items():
            if round_ < rounds[name]:
                times[name].append(call())
    return times


def fastest_in_turns(calls: dict, rounds, warmups=1) -> dict:
    """{name: seconds of its fastest timed call} (times_in_turns); a name given 0 rounds: inf."""
    return {name: min(times, default=float("inf")) for name, times in times_in_turns(calls, rounds, warmups).items()}


def ratio_metrics(script: str, tables: list[dict]) -> dict:
    """{"bench/SCRIPT/TABLE/ROW KEY/RATIO COLUMN": ratio} over every reported table."""
    metrics = {}
    for table in tables:
        index = {c: i for i, c in enumerate(table["columns"])}
        for row in table["rows"]:
            label = " ".join(str(row[index[c]]) for c in table["key"])
            for column in table["ratios"]:
                if row[index[column]] is not None:
                    metrics[f"bench/{script}/{table['name']}/{label}/{column}"] = float(row[index[column]])
    return metrics


def add_arguments(parser):
    parser.add_argument("name", nargs="?", help="benchmark name (a file in bench/ without .py)")
    parser.add_argument("args", nargs="*", help="arguments passed to the script (after --)")
    parser.add_argument("--out", default="runs/bench", metavar="DIR",
                        help="directory for NAME.json (the reported tables) and W&B files (default runs/bench)")
    tracking.add_arguments(parser, default_group="bench")


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
    tables, code = run_script(args.name, args.args)
    if code == 0:
        record(args, tables)
    return code


def run_script(name: str, argv: list) -> tuple[list, int]:
    """Run bench/NAME.py as __main__ with `argv`; returns the tables it reported and its exit code."""
    global _reported
    _reported = []
    sys.argv = [str(BENCH_DIR / f"{name}.py"), *argv]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
        code = 0
    except SystemExit as stop:  # scripts end with sys.exit(main()) or sys.exit("message")
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
    finally:
        tables, _reported = _reported, None
    return tables, code


def record(args, tables: list[dict]):
    """OUT/NAME.json and the W&B run of one benchmark."""
    from biomamba.runtime import git_commit
    out = Path(args.out)
    payload = {"benchmark": args.name, "args": list(args.args), "git_commit": git_commit(), "tables": tables}
    write_text(out / f"{args.name}.json", json.dumps(payload, indent=2) + "\n")
    with tracking.start_for_command(args, job_type="bench", name=args.name, directory=out,
                                    config={k: v for k, v in payload.items() if k != "tables"}) as tracker:
        tracker.summarize(ratio_metrics(args.name, tables))
        for table in tables:
            tracker.log_table(f"bench/{args.name}/{table['name']}", table["columns"], table["rows"])
    if tables:
        print(f"wrote {out / f'{args.name}.json'}", file=sys.stderr)
