# shellcheck shell=bash
# The command line the boot benchmarks share, sourced by bench/boot.sh and
# bench/boot-systemd.sh:
#
#   bench_options DEFAULT_CONTENDERS "$@"
#
# reads -n RUNS, -c CONTENDERS, -r (reuse the last run's ISOs), -h (prints
# the script's header comment, to its first line that is not a comment:
# a fixed line range went stale as the headers grew) and the optional
# WORKDIR, and sets
# RUNS (default $RUNS or 5), CONTENDERS, REUSE and BENCH (WORKDIR, default
# work/bench of the tree, created).
# script_header FILE: FILE's comment lines after the first, to the first
# line that is not a comment or is a shellcheck directive (the scripts'
# own -h print theirs with the same awk).
script_header() {
    awk 'NR > 1 { if (!/^#/ || /^# shellcheck/) exit; print }' "$1"
}

bench_options() {
    local opt OPTIND=1
    CONTENDERS=$1
    shift
    RUNS=${RUNS:-5}
    REUSE=0
    while getopts "n:c:rh" opt; do
        case $opt in
            n) RUNS=$OPTARG ;;
            c) CONTENDERS=$OPTARG ;;
            r) REUSE=1 ;;
            h) script_header "$0"; exit 0 ;;
            *) script_header "$0" >&2; exit 2 ;;
        esac
    done
    shift $((OPTIND - 1))
    BENCH=$(mkdir -p "${1:-$ROOT/work/bench}" && cd "${1:-$ROOT/work/bench}" && pwd)
}

# Contenders may carry kernel arguments: NAME@ARG+ARG boots NAME's image
# with ARG ARG added to its command line.
# contender_base NAME: the contender without its arguments;
# contender_args NAME: its arguments, each with a leading space;
# contender_iso NAME: the file name of its ISO ('@', '=', '+' made '_').
contender_base() { echo "${1%%@*}"; }
contender_args() { case $1 in *@*) echo " ${1#*@}" | tr + ' ' ;; esac; }
contender_iso() { echo "$1" | tr -c 'A-Za-z0-9.\n-' _ | sed 's/$/.iso/'; }

# bench_rounds CMD ITEM...: RUNS rounds; each runs `CMD ITEM ROUND` once
# per ITEM, in an order rotated by one each round, so that a burst of load
# from elsewhere on the shared host hits every item alike. An ITEM is
# split into words: "ours 2" calls `CMD ours 2 ROUND`.
bench_rounds() {
    local cmd=$1 r i
    shift
    for ((r = 1; r <= RUNS; r++)); do
        for ((i = 0; i < $#; i++)); do
            local k=$(((i + r - 1) % $# + 1))
            # shellcheck disable=SC2086 # the split is the point
            "$cmd" ${!k} "$r"
        done
    done
}
