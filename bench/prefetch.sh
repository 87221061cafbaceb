#!/bin/bash
# Cold whole-image sequential read through cloopd over a unix socket, one
# connection, interleaved rounds per --prefetch window (BENCHMARKS.md, "Prefetch").
# Needs root (drops the page cache) and nbdcopy.
# usage: bench.sh IMAGE ROUNDS WINDOWS...
img=$1; rounds=$2; shift 2
B=${CLOOPBOX:-target/release/cloopbox}
for r in $(seq $rounds); do
  for w in "$@"; do
    sock=${TMPDIR:-/tmp}/prefetch-bench.$w; rm -f $sock
    sync; echo 1 > /proc/sys/vm/drop_caches
    $B cloopd "$img" --unix $sock --prefetch $w -q & pid=$!
    for i in $(seq 100); do [ -S $sock ] && break; sleep 0.05; done
    t0=$(date +%s.%N)
    nbdcopy --no-extents --connections=1 --request-size=32768 "nbd+unix:///?socket=$sock" null:
    t1=$(date +%s.%N)
    cpu=$(awk '{print ($14+$15)/100}' /proc/$pid/stat)
    kill $pid; wait $pid 2>/dev/null
    echo "round=$r prefetch=$w wall=$(echo "$t1-$t0"|bc) cpu=$cpu load=$(cut -d' ' -f1 /proc/loadavg)"
  done
done
