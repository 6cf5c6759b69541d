"""The step records and summary of bench/gpu_first_light.sh (no torch: it runs even when torch fails).

    python bench/gpu_summary.py record --out DIR --name NAME --rc RC --seconds S --limit L [--skipped]
    python bench/gpu_summary.py write --out DIR

`record` appends one line to DIR/steps.jsonl: the step, its status (ok, failed, timed out, skipped,
dry run), exit code, seconds and limit, and its log (DIR/logs/NAME.log). `write` turns the records
into DIR/summary.json and DIR/summary.md: a table of every step, then the last lines of each log,
where the figures are (each step prints its table last).
"""
import argparse
import json
from pathlib import Path

TAIL_LINES = 25
TIMEOUT_CODES = (124, 137)  # timeout(1): limit reached; 128 + SIGKILL: --kill-after fired


def status_of(rc: int, skipped: bool = False, dry_run: bool = False) -> str:
    if skipped:
        return "skipped (out of time)"
    if dry_run:
        return "dry run"
    if rc == 0:
        return "ok"
    return "timed out" if rc in TIMEOUT_CODES else "failed"


def record(out: Path, name: str, rc: int, seconds: float, limit: int, skipped=False, dry_run=False) -> dict:
    row = {"step": name, "status": status_of(rc, skipped, dry_run), "rc": rc, "seconds": round(seconds, 1),
           "limit_s": limit, "log": f"logs/{name}.log"}
    with open(out / "steps.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    return row


def read_records(out: Path) -> list[dict]:
    path = out / "steps.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def log_tail(out: Path, row: dict, lines: int = TAIL_LINES) -> str:
    log = out / row["log"]
    if not log.is_file():
        return "(no log)"
    text = log.read_text(encoding="utf-8", errors="replace").rstrip().splitlines()
    return "\n".join(text[-lines:]) if text else "(empty log)"


def summary_markdown(out: Path, rows: list[dict], header: dict) -> str:
    lines = ["# GPU first light", ""]
    lines += [f"- {key}: {value}" for key, value in header.items()]
    lines += ["", "| step | status | exit | seconds | limit |", "|---|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['status']} | {r['rc']} | {r['seconds']} | {r['limit_s']} |" for r in rows]
    for r in rows:
        lines += ["", f"## {r['step']} ({r['status']})", "", "```", log_tail(out, r), "```"]
    return "\n".join(lines) + "\n"


def write(out: Path) -> dict:
    rows = read_records(out)
    header_path = out / "header.json"
    header = json.loads(header_path.read_text()) if header_path.is_file() else {}
    summary = {"header": header, "steps": rows,
               "passed": sum(r["status"] == "ok" for r in rows), "total": len(rows)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    (out / "summary.md").write_text(summary_markdown(out, rows, header), encoding="utf-8")
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    rec = sub.add_parser("record", help="append one step's record to DIR/steps.jsonl")
    rec.add_argument("--out", type=Path, required=True)
    rec.add_argument("--name", required=True)
    rec.add_argument("--rc", type=int, required=True)
    rec.add_argument("--seconds", type=float, required=True)
    rec.add_argument("--limit", type=int, required=True)
    rec.add_argument("--skipped", action="store_true")
    rec.add_argument("--dry-run", action="store_true")
    wr = sub.add_parser("write", help="DIR/summary.md and DIR/summary.json from the records")
    wr.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.action == "record":
        row = record(args.out, args.name, args.rc, args.seconds, args.limit, args.skipped, args.dry_run)
        print(f"[gpu-first-light] {row['step']}: {row['status']} (exit {row['rc']}, {row['seconds']} s "
              f"of {row['limit_s']})", flush=True)
    else:
        summary = write(args.out)
        print(f"[gpu-first-light] {summary['passed']} of {summary['total']} steps ok; "
              f"{args.out / 'summary.md'}")


if __name__ == "__main__":
    main()
