#!/usr/bin/env bash
# hubbub: is this box tuned for the connections it should hold?
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=knobs.sh
. "$here/knobs.sh"

usage() {
    cat <<USAGE
Usage: tuning/check.sh [--target N] [--limit-nofile N]

Prints each kernel knob of tuning/sysctl.conf (current value, recommended
value, whether it meets the recommendation by the knob's rule), the
open-file limits, and how many connections this box holds by memory and by
limits. Changes nothing.

  --target N        connections the box must hold (default 1000000)
  --limit-nofile N  the RLIMIT_NOFILE hubbub will run with (default: this
                    shell's hard limit; for a service, systemd's LimitNOFILE=)
  -h, --help        this text

Exit status: 0 when the box holds the target, 1 below it, 2 on bad usage.
Environment: HUBBUB_SYSCTL_ROOT reads the knobs from another tree than
/proc/sys (tests use a fake one).
USAGE
}

target=1000000
nofile="$(ulimit -Hn)"
while [ $# -gt 0 ]; do
    case "$1" in
        --target | --limit-nofile)
            [ $# -ge 2 ] && is_uint "$2" || { echo "check.sh: $1 needs a whole number" >&2; exit 2; }
            if [ "$1" = --target ]; then target="$2"; else nofile="$2"; fi
            shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
table="$(knobs_table "$here/sysctl.conf")"
read_sysctl() { # KEY: its value, or 0 when absent
    knob_current "$1" || echo 0
}
[ "$nofile" = unlimited ] && nofile=$(read_sysctl fs.nr_open)

# Kernel plus user-space memory of one idle connection: ~3.5 KiB of socket,
# file and epoll structures, 4 KiB minimum buffers mostly unallocated while
# idle, ~100 B in hubbub. 4.5 KiB keeps a margin.
per_conn_bytes=4608
shards=$(nproc)

printf '%-34s %-28s %-28s %-10s %s\n' knob current recommended rule ok
below=0 total=0 absent=0
while IFS=$'\t' read -r key want rule; do
    total=$((total + 1))
    if ! have="$(knob_current "$key")"; then
        absent=$((absent + 1))
        printf '%-34s %-28s %-28s %-10s %s\n' "$key" "(absent)" "$want" "$rule" "n/a"
        continue
    fi
    ok=yes
    if [ "$(knob_plan "$have" "$want" "$rule")" != "$have" ]; then
        ok=NO
        below=$((below + 1))
    fi
    printf '%-34s %-28s %-28s %-10s %s\n' "$key" "$have" "$want" "$rule" "$ok"
done <<<"$table"

mem_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
file_max=$(read_sysctl fs.file-max)
nr_open=$(read_sysctl fs.nr_open)
by_memory=$((mem_kib * 1024 * 8 / 10 / per_conn_bytes))
reserve=$((64 + 19 * shards))
by_limits=$nofile
[ "$nr_open" -lt "$by_limits" ] && by_limits=$nr_open
[ "$file_max" -lt "$by_limits" ] && by_limits=$file_max
by_limits=$((by_limits > reserve ? by_limits - reserve : 0))
holds=$((by_memory < by_limits ? by_memory : by_limits))

echo
knobs_summary "$below" "$total" "$absent"
echo "open-file limit for hubbub: $nofile (fs.nr_open $nr_open, fs.file-max $file_max)"
echo "by memory: $by_memory connections (80% of $((mem_kib / 1024)) MiB at $per_conn_bytes B each)"
echo "by limits: $by_limits connections (open-file limit less $reserve reserved for $shards shards)"
echo "this box holds: $holds connections; target $target; $below kernel knob(s) below the recommendation"
if [ "$holds" -lt "$target" ]; then
    echo "verdict: BELOW TARGET. Raise the open-file limit (tuning/limits.conf, LimitNOFILE=) and run tuning/apply.sh."
    exit 1
fi
echo "verdict: ok"
