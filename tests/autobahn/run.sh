#!/usr/bin/env bash
# Run the Autobahn TestSuite cases (through kosoku) against a running server's
# /echo endpoint, then judge the results with check.py against expected.json.
#
#   tests/autobahn/run.sh HOST:PORT [extra kosoku args, e.g. -i '1.*']
#   AUTOBAHN_ADDR=127.0.0.1:9001 tests/autobahn/run.sh
#
# Environment (all optional):
#   AUTOBAHN_ADDR          server address when no argument is given
#   AUTOBAHN_PATH          request path kosoku connects to (default /echo)
#   AUTOBAHN_OUT           report directory (default: a fresh temp dir, kept)
#   AUTOBAHN_TIMEOUT_SECS  bound on the whole kosoku run (default 600)
#   AUTOBAHN_PARALLELISM   cases run at once (default 1: timing cases stay honest)
#   KOSOKU                 kosoku executable (default: REPO/.venv/bin/kosoku,
#                          installed there at the pinned version when missing)
#
# Cases 12.* and 13.* are always excluded: they need permessage-deflate, which
# hubbub does not offer. Extra arguments narrow the run (check.py then checks
# only the cases that ran). Exit status: 0 pass, 1 conformance failure,
# 2 harness failure (no kosoku, timeout, no report).
set -euo pipefail

KOSOKU_VERSION="0.1.0"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

addr="${1:-${AUTOBAHN_ADDR:-}}"
[ $# -gt 0 ] && shift
if [ -z "$addr" ]; then
    echo "usage: $0 HOST:PORT [kosoku args]   (or set AUTOBAHN_ADDR)" >&2
    exit 2
fi
path="${AUTOBAHN_PATH:-/echo}"
timeout_secs="${AUTOBAHN_TIMEOUT_SECS:-600}"
parallelism="${AUTOBAHN_PARALLELISM:-1}"
out="${AUTOBAHN_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/autobahn.XXXXXX")}"

kosoku="${KOSOKU:-$repo/.venv/bin/kosoku}"
if [ ! -x "$kosoku" ]; then
    if [ -n "${KOSOKU:-}" ]; then
        echo "autobahn: KOSOKU=$KOSOKU is not executable" >&2
        exit 2
    fi
    echo "autobahn: installing kosoku==$KOSOKU_VERSION into $repo/.venv" >&2
    [ -x "$repo/.venv/bin/python" ] || python3 -m venv "$repo/.venv"
    timeout 300 "$repo/.venv/bin/pip" install --quiet "kosoku==$KOSOKU_VERSION" || {
        echo "autobahn: could not install kosoku" >&2
        exit 2
    }
fi
python="$(dirname "$kosoku")/python"
[ -x "$python" ] || python="python3"

partial=()
[ $# -gt 0 ] && partial=(--partial)

# kosoku takes a full ws:// URL and connects to its path; a bare HOST:PORT
# would request "/", which hubbub does not serve as an echo endpoint.
url="ws://$addr$path"
mkdir -p "$out"
echo "autobahn: $url -> $out (timeout ${timeout_secs}s)"
start=$(date +%s)
status=0
timeout --kill-after=10 "$timeout_secs" \
    "$kosoku" "$url" -x '12.*' -x '13.*' -p "$parallelism" -o "$out" "$@" \
    >"$out/kosoku.log" 2>&1 || status=$?
echo "autobahn: kosoku exited $status after $(( $(date +%s) - start ))s (log: $out/kosoku.log)"

# kosoku exits 1 whenever a case is not OK/NON-STRICT/INFORMATIONAL; check.py
# applies our rules instead. Anything else means there is no trustworthy report.
if [ "$status" -ne 0 ] && [ "$status" -ne 1 ]; then
    tail -n 20 "$out/kosoku.log" >&2
    echo "autobahn: kosoku did not finish (exit $status; 124 = timed out)" >&2
    exit 2
fi
if [ ! -f "$out/index.json" ]; then
    tail -n 20 "$out/kosoku.log" >&2
    echo "autobahn: kosoku wrote no $out/index.json" >&2
    exit 2
fi
exec "$python" "$here/check.py" "${partial[@]}" "$out"
