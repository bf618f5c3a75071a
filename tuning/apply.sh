#!/usr/bin/env bash
# hubbub: apply the kernel knobs of sysctl.conf and install limits.conf,
# saving the values it changes first so that --revert can restore them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=knobs.sh
. "$here/knobs.sh"

usage() {
    cat <<USAGE
Usage: sudo tuning/apply.sh [--dry-run | --revert]

Brings every kernel knob of tuning/sysctl.conf up to its recommendation and
installs tuning/limits.conf as /etc/security/limits.d/hubbub.conf. A knob
that already meets the recommendation by its rule (see the head of
sysctl.conf) is kept as it is: a higher file limit or buffer maximum is
never lowered. The knobs it changes are exactly those tuning/check.sh
reports as below the recommendation.

  (no option)  save the current values of the knobs it changes, then write
               them and install limits.conf
  --dry-run    print what would change; write nothing
  --revert     restore the saved values and the previous limits file
  -h, --help   this text

The saved state lives in \$HUBBUB_TUNING_STATE (default /var/lib/hubbub/tuning).
To keep the settings across reboots copy sysctl.conf to
/etc/sysctl.d/60-hubbub.conf. Exit status: 0 done, 1 a knob could not be
written or nothing to revert, 2 bad usage.
Environment: HUBBUB_SYSCTL_ROOT (default /proc/sys) and HUBBUB_LIMITS_DIR
(default /etc/security/limits.d) point the script at other trees (tests).
USAGE
}

state="${HUBBUB_TUNING_STATE:-/var/lib/hubbub/tuning}"
limits_dir="${HUBBUB_LIMITS_DIR:-/etc/security/limits.d}"
mode=apply
case "${1:-}" in
    --dry-run) mode=dry ;;
    --revert) mode=revert ;;
    '') ;;
    -h | --help) usage; exit 0 ;;
    *) echo "apply.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
esac
[ $# -le 1 ] || { echo "apply.sh: one option at most (see --help)" >&2; exit 2; }

failed=0
write_knob() { # KEY VALUE
    local file
    file="$(knob_path "$1")"
    if ! { [ -w "$file" ] && echo "$2" >"$file"; } 2>/dev/null; then
        echo "FAILED $1: $file is not writable here" >&2
        failed=$((failed + 1))
    fi
}

if [ "$mode" = revert ]; then
    [ -f "$state/sysctl.saved" ] || { echo "apply.sh: nothing saved in $state" >&2; exit 1; }
    while IFS='=' read -r key value; do
        echo "revert $key = $value"
        write_knob "$key" "$value"
    done <"$state/sysctl.saved"
    if [ -f "$state/limits.saved" ]; then
        cp "$state/limits.saved" "$limits_dir/hubbub.conf"
    else
        rm -f "$limits_dir/hubbub.conf"
    fi
    [ "$failed" -eq 0 ] || { echo "apply.sh: $failed knob(s) could not be restored" >&2; exit 1; }
    rm -f "$state/sysctl.saved" "$state/limits.saved"
    echo "reverted"
    exit 0
fi

table="$(knobs_table "$here/sysctl.conf")"
[ "$mode" = apply ] && mkdir -p "$state" && touch "$state/sysctl.saved"
below=0 total=0 absent=0
while IFS=$'\t' read -r key want rule; do
    total=$((total + 1))
    if ! have="$(knob_current "$key")"; then
        absent=$((absent + 1))
        echo "skip $key: absent on this kernel (module not loaded?)"
        continue
    fi
    plan="$(knob_plan "$have" "$want" "$rule")"
    if [ "$plan" = "$have" ]; then
        echo "keep $key = $have (meets $rule $want)"
        continue
    fi
    below=$((below + 1))
    echo "set  $key: $have -> $plan"
    [ "$mode" = apply ] || continue
    # The first value saved for a knob is the original: keep it across
    # repeated applies.
    grep -q "^$key=" "$state/sysctl.saved" || echo "$key=$have" >>"$state/sysctl.saved"
    write_knob "$key" "$plan"
done <<<"$table"
knobs_summary "$below" "$total" "$absent"
echo "limits: $here/limits.conf -> $limits_dir/hubbub.conf"
if [ "$mode" = dry ]; then
    echo "dry run: $below knob(s) would change; nothing written"
    exit 0
fi
if [ -d "$limits_dir" ]; then
    if [ -f "$limits_dir/hubbub.conf" ] && [ ! -f "$state/limits.saved" ] && ! cmp -s "$here/limits.conf" "$limits_dir/hubbub.conf"; then
        cp "$limits_dir/hubbub.conf" "$state/limits.saved"
    fi
    cp "$here/limits.conf" "$limits_dir/hubbub.conf"
else
    echo "skip limits: no $limits_dir here (systemd units use LimitNOFILE=)"
fi
if [ "$failed" -gt 0 ]; then
    echo "apply.sh: $failed knob(s) could not be written; saved originals in $state" >&2
    exit 1
fi
echo "applied $below change(s); saved originals in $state (revert: $0 --revert)"
