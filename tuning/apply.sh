#!/usr/bin/env bash
# Applies sysctl.conf (and installs limits.conf), saving the current values
# first so that --revert can restore them.
#   sudo ./apply.sh            save current values, apply, install limits.conf
#   ./apply.sh --dry-run       print what would change; touch nothing
#   sudo ./apply.sh --revert   restore the saved values
# The saved state lives in $HUBBUB_TUNING_STATE (default /var/lib/hubbub/tuning).
# To persist across reboots copy sysctl.conf to /etc/sysctl.d/60-hubbub.conf.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
state="${HUBBUB_TUNING_STATE:-/var/lib/hubbub/tuning}"
mode=apply
case "${1:-}" in
    --dry-run) mode=dry ;;
    --revert) mode=revert ;;
    '') ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "apply.sh: unknown argument $1" >&2; exit 2 ;;
esac

knobs() {
    while read -r line; do
        case "$line" in ''|'#'*) continue ;; esac
        key="$(echo "${line%%=*}" | xargs)"; value="$(echo "${line#*=}" | xargs)"
        echo "$key=$value"
    done < "$here/sysctl.conf"
}

write_knob() { # key value
    local file="/proc/sys/${1//./\/}"
    if [ -w "$file" ]; then echo "$2" > "$file"; else echo "skip $1: not writable here" >&2; fi
}

if [ "$mode" = revert ]; then
    [ -f "$state/sysctl.saved" ] || { echo "apply.sh: nothing saved in $state" >&2; exit 1; }
    while IFS='=' read -r key value; do
        echo "revert $key = $value"
        write_knob "$key" "$value"
    done < "$state/sysctl.saved"
    if [ -f "$state/limits.saved" ]; then cp "$state/limits.saved" /etc/security/limits.d/hubbub.conf
    else rm -f /etc/security/limits.d/hubbub.conf; fi
    echo "reverted"
    exit 0
fi

[ "$mode" = apply ] && mkdir -p "$state" && : > "$state/sysctl.saved.tmp"
changes=0
while IFS='=' read -r key value; do
    file="/proc/sys/${key//./\/}"
    if [ ! -r "$file" ]; then
        echo "skip $key: absent on this kernel (module not loaded?)"
        continue
    fi
    current="$(xargs < "$file")"
    if [ "$current" = "$value" ]; then
        echo "keep $key = $current"
        continue
    fi
    changes=$((changes + 1))
    echo "set  $key: $current -> $value"
    if [ "$mode" = apply ]; then
        echo "$key=$current" >> "$state/sysctl.saved.tmp"
        write_knob "$key" "$value"
    fi
done < <(knobs)
echo "limits: $here/limits.conf -> /etc/security/limits.d/hubbub.conf"
if [ "$mode" = dry ]; then
    echo "dry run: $changes knob(s) would change; nothing written"
    exit 0
fi
# Keep the first saved state across repeated applies: it is the original.
[ -f "$state/sysctl.saved" ] || mv "$state/sysctl.saved.tmp" "$state/sysctl.saved"
rm -f "$state/sysctl.saved.tmp"
if [ -d /etc/security/limits.d ]; then
    [ -f /etc/security/limits.d/hubbub.conf ] && [ ! -f "$state/limits.saved" ] && cp /etc/security/limits.d/hubbub.conf "$state/limits.saved"
    cp "$here/limits.conf" /etc/security/limits.d/hubbub.conf
fi
echo "applied $changes change(s); saved originals in $state (revert: $0 --revert)"
