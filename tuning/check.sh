#!/usr/bin/env bash
# Prints each knob of sysctl.conf (current vs recommended), the open-file
# limits, and how many connections this box can hold by memory and by
# limits. Exits 1 when that is below --target N (default 1000000).
#   ./check.sh [--target N] [--limit-nofile N]
# --limit-nofile: the RLIMIT_NOFILE hubbub will run with (default: this
# shell's hard limit; systemd's LimitNOFILE= for a service).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target=1000000
nofile="$(ulimit -Hn)"
while [ $# -gt 0 ]; do
    case "$1" in
        --target) target="$2"; shift 2 ;;
        --limit-nofile) nofile="$2"; shift 2 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) echo "check.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ "$nofile" = unlimited ] && nofile=$(cat /proc/sys/fs/nr_open)

# Kernel plus user-space memory of one idle connection: ~3.5 KiB of socket,
# file and epoll structures, 4 KiB minimum buffers mostly unallocated while
# idle, ~100 B in hubbub. 4.5 KiB keeps a margin.
per_conn_bytes=4608
shards=$(nproc)

printf '%-34s %-28s %-28s %s\n' knob current recommended ok
short=0
while read -r line; do
    case "$line" in ''|'#'*) continue ;; esac
    key="${line%%=*}"; key="$(echo "$key" | xargs)"
    want="${line#*=}"; want="$(echo "$want" | xargs)"
    file="/proc/sys/${key//./\/}"
    if [ ! -r "$file" ]; then
        printf '%-34s %-28s %-28s %s\n' "$key" "(absent)" "$want" "n/a"
        continue
    fi
    have="$(xargs < "$file")"
    ok=yes
    # Every knob is "at least": compare field by field (ranges compare the
    # width: ip_local_port_range wants a low start).
    if [ "$key" = net.ipv4.ip_local_port_range ]; then
        read -r hlo hhi <<<"$have"; read -r wlo whi <<<"$want"
        [ $((hhi - hlo)) -ge $((whi - wlo)) ] || ok=NO
    elif [ "$key" = net.ipv4.tcp_fin_timeout ]; then
        [ "$have" -le "$want" ] || ok=NO  # shorter is the point
    elif [ "$key" = net.ipv4.tcp_rmem ] || [ "$key" = net.ipv4.tcp_wmem ]; then
        # Small defaults save memory: the max is what must be high enough.
        [ "$(echo "$have" | awk '{print $3}')" -ge "$(echo "$want" | awk '{print $3}')" ] || ok=NO
    else
        i=1
        for w in $want; do
            h="$(echo "$have" | awk -v i=$i '{print $i}')"
            [ "${h:-0}" -ge "$w" ] 2>/dev/null || ok=NO
            i=$((i + 1))
        done
    fi
    [ "$ok" = NO ] && short=$((short + 1))
    printf '%-34s %-28s %-28s %s\n' "$key" "$have" "$want" "$ok"
done < "$here/sysctl.conf"

mem_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
file_max=$(cat /proc/sys/fs/file-max)
nr_open=$(cat /proc/sys/fs/nr_open)
by_memory=$(( mem_kib * 1024 * 8 / 10 / per_conn_bytes ))
reserve=$(( 64 + 19 * shards ))
by_limits=$nofile
[ "$nr_open" -lt "$by_limits" ] && by_limits=$nr_open
[ "$file_max" -lt "$by_limits" ] && by_limits=$file_max
by_limits=$(( by_limits > reserve ? by_limits - reserve : 0 ))
holds=$(( by_memory < by_limits ? by_memory : by_limits ))

echo
echo "open-file limit for hubbub: $nofile (fs.nr_open $nr_open, fs.file-max $file_max)"
echo "by memory: $by_memory connections (80% of $((mem_kib / 1024)) MiB at $per_conn_bytes B each)"
echo "by limits: $by_limits connections (open-file limit less $reserve reserved for $shards shards)"
echo "this box holds: $holds connections; target $target; $short kernel knob(s) below the recommendation"
if [ "$holds" -lt "$target" ]; then
    echo "verdict: BELOW TARGET. Raise the open-file limit (tuning/limits.conf, LimitNOFILE=) and run tuning/apply.sh."
    exit 1
fi
echo "verdict: ok"
