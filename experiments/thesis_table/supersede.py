"""Move the thesis table's records made on an earlier version of a generated data set out of
``results.json`` (issue 19), so that the table only reads runs on the set now in use.

The xTB sets are generated (experiments/xtb_data/gen_xtb.py); a set that is regenerated is
another set (MD is chaotic: see experiments/xtb_data/README.md), and a run made on the earlier
one cannot be compared with runs on the new one.  Records name their set (``data_sha256``);
records from before they did (2026-12-06) name none, and ``--made-on`` says which set they were
made on.  The current set is the one its committed summary names
(experiments/results/xtb_data/<molecule>_500K_summary.json).

    python experiments/thesis_table/supersede.py --molecule stachyose --made-on 27e74e1d... \\
        --reason "..."
    # -> the records leave results.json and are appended, with the reason, the command and the
    #    date, to experiments/results/thesis_table/superseded.json

Records whose ``data_sha256`` is the current set's are never moved.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))

from thesis_table import OUT, load_results, locked  # noqa: E402

SUMMARIES = ROOT / "experiments" / "results" / "xtb_data"


def _write(path: Path, obj) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def supersede(results: Path, molecule: str, made_on: str, current: str, reason: str, command: str) -> list[dict]:
    """Move ``molecule``'s records made on the set ``made_on`` (their ``data_sha256``, or none
    given) from ``results`` to ``superseded.json`` beside it; return the moved records."""
    if not made_on or current.startswith(made_on):
        raise SystemExit(f"--made-on {made_on!r} names the current {molecule} set ({current[:12]}...): nothing "
                         "to supersede")
    out = results.with_name("superseded.json")
    with locked(results):
        recs = load_results(results)
        moved, kept = [], []
        for r in recs:
            on_old = r["molecule"] == molecule and r.get("data_sha256", made_on).startswith(made_on)
            (moved if on_old else kept).append(r)
        if not moved:
            return []
        old = json.loads(out.read_text()) if out.exists() else []
        _write(out, old + [{"molecule": molecule, "made_on_sha256": made_on, "current_sha256": current,
                            "reason": reason, "command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                            "records": moved}])
        _write(results, kept)
    return moved


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--molecule", required=True)
    ap.add_argument("--made-on", required=True, help="sha256 (or a prefix) of the set the records were made on")
    ap.add_argument("--reason", required=True)
    ap.add_argument("--results", type=Path, default=OUT / "results.json")
    ap.add_argument("--current", help="sha256 of the set in use (default: from its committed summary)")
    args = ap.parse_args(argv)
    current = args.current or json.loads((SUMMARIES / f"{args.molecule}_500K_summary.json").read_text())["arrays_sha256"]
    moved = supersede(args.results, args.molecule, args.made_on, current, args.reason,
                      shlex.join(["python", *sys.argv]))
    print(f"moved {len(moved)} {args.molecule} records to {args.results.with_name('superseded.json')}")
    for r in moved:
        print(" ", r["labels"], r["protocol"], r["variant"], r["seed"], r["status"])


if __name__ == "__main__":
    main()
