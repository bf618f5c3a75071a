#!/usr/bin/env python3
"""Judge a kosoku (Autobahn TestSuite) report directory.

    check.py [--expected FILE] [--partial] OUTDIR
    check.py --write-expected [--expected FILE] OUTDIR

OUTDIR is what `kosoku -o OUTDIR` wrote: `index.json` maps agent -> case id ->
{behavior, behaviorClose, remoteCloseCode, duration, reportfile}, and each
reportfile is the case's full JSON report (description, expectation, result
prose, wire log).

A run fails (exit 1) when
  - a case's `behavior` is not OK, NON-STRICT or INFORMATIONAL (UNIMPLEMENTED
    is accepted only for 12.* and 13.*, the permessage-deflate cases), or
  - a case's `behaviorClose` is not OK or INFORMATIONAL, or
  - a verdict that expected.json records as OK is anything else now, or
  - a case expected.json lists did not run (unless --partial).
A verdict better than the recorded one is reported, not failed: record it
with --write-expected. Exit 2 means the report could not be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BEHAVIOR_ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}
CLOSE_ACCEPTED = {"OK", "INFORMATIONAL"}
# Cases that need permessage-deflate, which the server does not offer.
DEFLATE_PREFIXES = ("12.", "13.")
FIELDS = ("behavior", "behaviorClose")
DEFAULT_EXPECTED = Path(__file__).resolve().parent / "expected.json"


def case_key(case_id: str) -> tuple[int, ...]:
    """Sort "9.10.2" after "9.2.1", as the suite numbers them."""
    return tuple(int(part) if part.isdigit() else 0 for part in case_id.split("."))


def load_run(outdir: Path) -> dict[str, dict]:
    """Case id -> index entry, over every agent in index.json."""
    index = json.loads((outdir / "index.json").read_text())
    if len(index) != 1:
        print(f"note: index.json holds {len(index)} agents; merging them", file=sys.stderr)
    run: dict[str, dict] = {}
    for cases in index.values():
        run.update(cases)
    return run


def case_details(outdir: Path, entry: dict) -> dict:
    """The case's full report, or {} when it is missing or unreadable."""
    try:
        return json.loads((outdir / entry["reportfile"]).read_text())
    except (KeyError, OSError, ValueError):
        return {}


def rule_violations(case_id: str, entry: dict) -> list[str]:
    """Why this verdict is unacceptable whatever expected.json says."""
    problems = []
    behavior = entry.get("behavior")
    allowed = BEHAVIOR_ACCEPTED
    if case_id.startswith(DEFLATE_PREFIXES):
        allowed = allowed | {"UNIMPLEMENTED"}
    if behavior not in allowed:
        problems.append(f"behavior {behavior}")
    if entry.get("behaviorClose") not in CLOSE_ACCEPTED:
        problems.append(f"behaviorClose {entry.get('behaviorClose')}")
    return problems


def regressions(expected: dict[str, dict], run: dict[str, dict], partial: bool) -> dict[str, list[str]]:
    """Cases whose recorded OK verdicts are no longer OK (or did not run)."""
    found: dict[str, list[str]] = {}
    for case_id, verdicts in expected.items():
        entry = run.get(case_id)
        if entry is None:
            if not partial:
                found[case_id] = ["expected in the run but missing"]
            continue
        for field in FIELDS:
            if verdicts.get(field) == "OK" and entry.get(field) != "OK":
                found.setdefault(case_id, []).append(f"{field} was OK, now {entry.get(field)}")
    return found


def improvements(expected: dict[str, dict], run: dict[str, dict]) -> list[str]:
    out = []
    for case_id, entry in run.items():
        verdicts = expected.get(case_id, {})
        for field in FIELDS:
            if field in verdicts and verdicts[field] != "OK" and entry.get(field) == "OK":
                out.append(f"{case_id} {field}: {verdicts[field]} -> OK")
    return sorted(out, key=lambda line: case_key(line.split()[0]))


def summary(run: dict[str, dict]) -> str:
    counts: dict[tuple[str, str], int] = {}
    for entry in run.values():
        pair = (entry.get("behavior", "?"), entry.get("behaviorClose", "?"))
        counts[pair] = counts.get(pair, 0) + 1
    parts = [f"{n} x {b}/{c}" for (b, c), n in sorted(counts.items(), key=lambda kv: -kv[1])]
    return f"{len(run)} cases (behavior/behaviorClose): " + ", ".join(parts)


def print_offender(outdir: Path, case_id: str, entry: dict, problems: list[str]) -> None:
    details = case_details(outdir, entry)
    print(f"  {case_id}: behavior={entry.get('behavior')} behaviorClose={entry.get('behaviorClose')}"
          f" remoteCloseCode={entry.get('remoteCloseCode')} ({'; '.join(problems)})")
    for label, key in (("case", "description"), ("expect", "expectation"),
                       ("result", "result"), ("close", "resultClose")):
        text = " ".join(str(details.get(key) or "").split())
        if text:
            print(f"      {label}: {text[:300]}")
    if "reportfile" in entry:
        print(f"      report: {outdir / entry['reportfile']}")


def write_expected(path: Path, run: dict[str, dict]) -> None:
    table = {cid: {f: run[cid].get(f) for f in FIELDS} for cid in sorted(run, key=case_key)}
    path.write_text(json.dumps(table, indent=2) + "\n")
    print(f"wrote {len(table)} cases to {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path, help="kosoku report directory (has index.json)")
    parser.add_argument("--expected", type=Path, default=DEFAULT_EXPECTED,
                        help="recorded verdicts (default: expected.json beside this script)")
    parser.add_argument("--partial", action="store_true",
                        help="the run covered a subset: don't fail expected cases that did not run")
    parser.add_argument("--write-expected", action="store_true",
                        help="record this run's verdicts in --expected (the run must pass the rules)")
    args = parser.parse_args()

    try:
        run = load_run(args.outdir)
    except (OSError, ValueError) as err:
        print(f"autobahn check: cannot read {args.outdir}/index.json: {err}", file=sys.stderr)
        return 2
    if not run:
        print("autobahn check: the report holds no cases", file=sys.stderr)
        return 2
    expected: dict[str, dict] = {}
    if args.expected.exists() and not args.write_expected:
        expected = json.loads(args.expected.read_text())
    elif not args.write_expected:
        print(f"note: no {args.expected}; checking the rules only")

    offenders: dict[str, list[str]] = {}
    for case_id, entry in run.items():
        problems = rule_violations(case_id, entry)
        if problems:
            offenders[case_id] = problems
    for case_id, problems in regressions(expected, run, args.partial).items():
        offenders.setdefault(case_id, []).extend(problems)

    print(summary(run))
    for line in improvements(expected, run):
        print(f"improved (record with --write-expected): {line}")
    if offenders:
        print(f"FAIL: {len(offenders)} case(s):")
        for case_id in sorted(offenders, key=case_key):
            print_offender(args.outdir, case_id, run.get(case_id, {}), offenders[case_id])
        if args.write_expected:
            print(f"not writing {args.expected}: the run breaks the rules above")
        return 1
    if args.write_expected:
        write_expected(args.expected, run)
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
