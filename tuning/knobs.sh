# hubbub tuning: what check.sh and apply.sh share (sourced, not run).
#
# One table, sysctl.conf: each "key = value" line is a knob with its
# recommended value, and the "#: RULE" line above it says how a current value
# is judged (see the head of sysctl.conf). Both scripts judge every knob with
# knob_plan, so they agree on which knobs are below the recommendation and
# apply.sh never lowers a value that already meets it.
#
# HUBBUB_SYSCTL_ROOT (default /proc/sys) points both scripts at another tree
# of sysctl files, e.g. a fake one in tests.

sysctl_root="${HUBBUB_SYSCTL_ROOT:-/proc/sys}"

# words TEXT: TEXT with its whitespace (tabs in /proc/sys) folded to single spaces.
words() {
    local -a w
    read -ra w <<<"$1"
    echo "${w[*]}"
}

is_uint() {
    [[ "$1" =~ ^[0-9]{1,18}$ ]]
}

# knobs_table FILE: prints "KEY<TAB>WANT<TAB>RULE" for every knob of FILE;
# fails naming the knob when its rule is missing or malformed.
knobs_table() {
    local file="$1" line key want rule="" n one
    local -a r w
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in
            '#:'*) rule="$(words "${line#\#:}")"; continue ;;
            '' | '#'* | ';'*) continue ;;
        esac
        key="$(words "${line%%=*}")"
        want="$(words "${line#*=}")"
        if [ -z "$rule" ]; then
            echo "$file: $key has no '#: RULE' line above it" >&2
            return 1
        fi
        read -ra r <<<"$rule"
        read -ra w <<<"$want"
        n=${#r[@]}
        for one in "${r[@]}"; do
            case "$one" in
                '>=' | '<=' | '=') ;;
                width) [ "$n" -eq 1 ] && [ ${#w[@]} -eq 2 ] || {
                    echo "$file: $key: width needs one rule and a 'LOW HIGH' value" >&2
                    return 1
                } ;;
                *) echo "$file: $key: unknown rule '$one' (>=, <=, = or width)" >&2; return 1 ;;
            esac
        done
        if [ "$n" -ne 1 ] && [ "$n" -ne ${#w[@]} ]; then
            echo "$file: $key: $n rules for ${#w[@]} fields (give one, or one per field)" >&2
            return 1
        fi
        for one in "${w[@]}"; do
            is_uint "$one" || { echo "$file: $key: '$one' is not a whole number" >&2; return 1; }
        done
        printf '%s\t%s\t%s\n' "$key" "$want" "$rule"
        rule=""
    done <"$file"
}

# knob_path KEY: the file of a sysctl under $sysctl_root.
knob_path() {
    echo "$sysctl_root/${1//.//}"
}

# knob_current KEY: the current value, whitespace folded; fails when absent.
knob_current() {
    local file
    file="$(knob_path "$1")"
    [ -r "$file" ] || return 1
    words "$(cat "$file")"
}

# knob_plan HAVE WANT RULE: the value the knob should have. It equals HAVE
# exactly when HAVE meets the recommendation; otherwise only the failing
# fields move to the recommendation (a ">=" field is never lowered, a "<="
# field never raised).
knob_plan() {
    local -a h w r out=()
    read -ra h <<<"$1"
    read -ra w <<<"$2"
    read -ra r <<<"$3"
    local i rule hv wv
    for hv in "${h[@]}"; do
        is_uint "$hv" || { echo "${w[*]}"; return; }
    done
    if [ ${#h[@]} -ne ${#w[@]} ]; then
        echo "${w[*]}"
        return
    fi
    if [ "${r[0]}" = width ]; then
        if [ $((10#${h[1]} - 10#${h[0]})) -ge $((10#${w[1]} - 10#${w[0]})) ]; then
            echo "${h[*]}"
        else
            echo "${w[*]}"
        fi
        return
    fi
    for i in "${!w[@]}"; do
        if [ ${#r[@]} -eq 1 ]; then rule="${r[0]}"; else rule="${r[i]}"; fi
        hv=$((10#${h[i]}))
        wv=$((10#${w[i]}))
        case "$rule" in
            '>=') out+=($((hv >= wv ? hv : wv))) ;;
            '<=') out+=($((hv <= wv ? hv : wv))) ;;
            *) out+=("$wv") ;;
        esac
    done
    echo "${out[*]}"
}

# knobs_summary BELOW TOTAL ABSENT: the count line both scripts print.
knobs_summary() {
    echo "knobs: $1 of $2 below the recommendation ($3 absent on this kernel)"
}
