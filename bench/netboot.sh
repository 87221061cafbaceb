#!/usr/bin/env bash
# Network boot benchmark (issue 12, part 4): the Debian systemd root of
# bench/boot-systemd.sh and the net-debian scenario, booted to multi-user
# under QEMU -accel tcg from ONE ISO (initramfs/mklive.sh -N), as
#   cd            that ISO as the guest's CD (-cdrom): the local reference
#   http          httpfs=http://10.0.2.100/debian.iso: lazy, range requests
#   fetch         fetch=http://10.0.2.100/debian.iso: the image into RAM first
#   http-pf       http with cloopbox.prefetch=PREFETCH (cloopd's block
#                 prefetch; the default boot has none)
#   http-delay    http through a proxy that delays every chunk DELAY_MS
#   fetch-delay   fetch through the same proxy
#   http-delay-pf http-delay with cloopbox.prefetch=PREFETCH
# nginx (the scenarios' nginx of tests/qemu/net.sh) serves the ISO on
# 127.0.0.1; the guest reaches it only through QEMU user networking with
# restrict=on and a guestfwd rule (10.0.2.100:80), as the net scenarios do.
# The host kernel has no sch_netem (tc netem fails), so the delay is
# bench/delay-proxy.py, a TCP proxy of ours on 127.0.0.1 between
# guestfwd and nginx: every chunk waits DELAY_MS in each direction (a
# request and its response 2 x DELAY_MS more), no bandwidth limit.
# Every guest boots the kernel and the ISO's own initramfs with -kernel and
# -initrd, on the same virtual hardware (the virtio NIC too): what differs
# is only where the root image comes from (a netboot loads kernel and
# initramfs by PXE or iPXE, not measured here).
#
#   bench/netboot.sh [-n RUNS] [-c CONTENDERS] [-r] [WORKDIR]   (default ./work/bench)
#
# -r reuses the ISO of the previous run and only boots. Then PAR_RUNS
# (default 2) rounds of the concurrent part, unless PAR_RUNS=0: PARALLEL
# (3) guests booting at once from one nginx (par-http, each its own URL,
# a hard link to the ISO, so the access log tells them apart), and as many
# from the same ISO as their CD at once (par-cd): on a 2-core host, TCG
# guests compete for the CPU, so par-http compares with par-cd.
#
# Each boot (cloopbox.test=boot) ends at the guest's BOOT-DONE line: the
# check waits for `systemctl is-system-running --wait`, prints ROOT-UP
# (the time to multi-user, host clock from QEMU's start), then
# /sys/block/nbd0/stat (the bytes the guest read from its root device).
# nginx's access log ($body_bytes_sent, one line per request) gives the
# bytes and requests the server sent, counted until QEMU stopped.
#
# Environment: RUNS (5), SMP (2), MEM (1024), QEMU_TIMEOUT (600), DELAY_MS
# (20), PREFETCH (16 blocks), PARALLEL (3), PAR_RUNS (2), CLOOPBOX,
# DEBIAN_TAR (as bench/boot-systemd.sh). Output: a Markdown report on
# stdout, kept in WORKDIR/netboot/report.md; runs.jsonl and logs/ beside
# it. Not a test: nothing fails on slow results.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/options.sh
. "$ROOT/bench/options.sh"
bench_options cd,http,fetch,http-pf,http-delay,fetch-delay,http-delay-pf "$@"
WORK=$BENCH/netboot
MEM=${MEM:-1024}
SMP=${SMP:-2}
TIMEOUT=${QEMU_TIMEOUT:-600}
DELAY_MS=${DELAY_MS:-20}
PREFETCH=${PREFETCH:-16}
PARALLEL=${PARALLEL:-3}
PAR_RUNS=${PAR_RUNS:-2}
DEBIAN_TAR=$(realpath -m "${DEBIAN_TAR:-$ROOT/work/qemu/debian-root.tar}")
[ -z "${CLOOPBOX:-}" ] || CLOOPBOX=$(realpath "$CLOOPBOX")
APPEND="console=ttyS0 panic=-1 loglevel=4 no_timer_check cloopbox.test=boot"
URL=http://10.0.2.100
say() { printf '[netboot] %s\n' "$*" >&2; }

LOGS=$WORK/logs
# shellcheck source=tests/qemu/lib.sh
. "$ROOT/tests/qemu/lib.sh"
# net_nginx_start/stop and net_qemu (the guestfwd rules) of the scenarios.
# shellcheck source=tests/qemu/net.sh
. "$ROOT/tests/qemu/net.sh"
command -v nginx > /dev/null || { echo "netboot: missing nginx (apt-get install nginx-light)" >&2; exit 1; }
bench_setup netboot
NET_DIR=$WORK # net_qemu boots $NET_DIR/initrd.gz

build() {
    bench_binary
    "$ROOT/tests/qemu/mkdebian.sh" "$DEBIAN_TAR"
    say "root tree and image: ext4 in cloop (mklive --image-only, as boot-systemd.sh), ISO by mklive -N"
    debian_tree tree
    debian_ext4_cloop tree root.cloop
    rm -rf tree www && mkdir -p www
    mklive -N --append "$APPEND" --image root.cloop -o www/debian.iso
    rm -f initrd.gz
    xorriso -osirrox on -indev www/debian.iso -extract /boot/initrd.gz initrd.gz 2> /dev/null
    [ -s initrd.gz ] || { say "no boot/initrd.gz in the ISO"; exit 1; }
    cat > sizes.json << JSON
{"image": $(stat -c %s root.cloop), "iso": $(stat -c %s www/debian.iso), "initrd": $(stat -c %s initrd.gz),
 "kernel": "$KVER", "qemu": "$(qemu-system-x86_64 --version | head -1)", "mem": $MEM, "smp": $SMP,
 "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')", "nproc": $(nproc),
 "host_kernel": "$(uname -r)", "append": "$APPEND", "binary": "$BINARY", "nginx": "$(nginx -v 2>&1 | cut -d/ -f2)"}
JSON
}
if [ "$REUSE" = 0 ] || [ ! -f sizes.json ]; then build; else say "reusing the ISO in $WORK"; fi
for i in $(seq "$PARALLEL"); do ln -f www/debian.iso "www/g$i.iso"; done
python3 - "$DELAY_MS" "$PREFETCH" "$PARALLEL" << 'PY'
import json, sys
s = json.load(open("sizes.json"))
s.update(delay_ms=int(sys.argv[1]), prefetch=int(sys.argv[2]), parallel=int(sys.argv[3]))
json.dump(s, open("sizes.json", "w"))
PY

# --- servers -----------------------------------------------------------------
PROXY_PID=""
cleanup() {
    net_nginx_stop "$WORK"
    [ -z "$PROXY_PID" ] || kill "$PROXY_PID" 2> /dev/null || true
}
trap cleanup EXIT
rm -f access.log error.log delay.port
NGINX_PORT="" DNS_PORT=""
net_nginx_start "$WORK"
DIRECT_PORT=$NGINX_PORT
python3 "$ROOT/bench/delay-proxy.py" delay.port "$DIRECT_PORT" "$DELAY_MS" &
PROXY_PID=$!
for _ in $(seq 50); do [ -s delay.port ] && break; sleep 0.1; done
DELAY_PORT=$(cat delay.port)
say "nginx on 127.0.0.1:$DIRECT_PORT, delay proxy ($DELAY_MS ms each way) on 127.0.0.1:$DELAY_PORT"

# --- boots -------------------------------------------------------------------
# qemu_args NAME URI: QEMU_ARGS for contender NAME; the network ones fetch URI.
qemu_args() {
    local name=$1 uri=$2
    case $name in
        cd | par-cd)
            # The same virtual hardware, NIC included (no network root: the
            # initramfs leaves it down).
            net_qemu "$APPEND"
            QEMU_ARGS=("${NET_QEMU[@]}" -cdrom www/debian.iso)
            return ;;
        *-delay*) NGINX_PORT=$DELAY_PORT ;;
        *) NGINX_PORT=$DIRECT_PORT ;;
    esac
    local opt=httpfs
    case $name in fetch*) opt=fetch ;; esac
    local extra=""
    case $name in *-pf) extra=" cloopbox.prefetch=$PREFETCH" ;; esac
    net_qemu "$APPEND$extra $opt=$URL$uri"
    QEMU_ARGS=("${NET_QEMU[@]}")
}

# one_boot NAME ROUND GUEST URI FROM: one guest to BOOT-DONE; appends its
# JSON line to runs.jsonl (the access log's lines after line FROM for URI).
BENCH_FAIL="Kernel panic|boot failed|cloopbox rescue|emergency mode|Emergency shell"
one_boot() {
    local name=$1 rnd=$2 guest=$3 uri=$4 from=$5
    local log=$name-$rnd-$guest
    qemu_args "$name" "$uri"
    BOOT_MARK="^ROOT-UP multi-user" QEMU_SMP=$SMP QEMU_MEM=$MEM TIMEOUT=$TIMEOUT \
        boot "$log" "^BOOT-DONE|$BENCH_FAIL" "${QEMU_ARGS[@]}"
    sleep 0.5 # nginx logs a request cut by QEMU's end when it sees the close
    python3 "$ROOT/bench/netboot-run.py" "$name" "$rnd" "$guest" "$LOGS/$log.log.times" "$BOOT_END" \
        "${BOOT_CPU:--}" "$BOOT_LOAD" "$BENCH_FAIL" access.log "$from" "$uri" >> runs.jsonl
}

IFS=, read -ra NAMES <<< "$CONTENDERS"
rm -f runs.jsonl logs/*.log logs/*.log.times
say "$RUNS rounds of ${#NAMES[@]} boots (${NAMES[*]}), rotated order, -smp $SMP"
cut -d' ' -f1-3 /proc/loadavg > load-before
seq_boot() { one_boot "$1" "$2" 1 /debian.iso "$(wc -l < access.log)"; }
bench_rounds seq_boot "${NAMES[@]}"
cut -d' ' -f1-3 /proc/loadavg > load-mid

# PARALLEL guests at once, par-http and par-cd alternating (which goes
# first rotates).
par_group() {
    local name=$1 rnd=$2 from g pids=()
    from=$(wc -l < access.log)
    say "$name round $rnd: $PARALLEL guests at once"
    for g in $(seq "$PARALLEL"); do
        one_boot "$name" "$rnd" "$g" "/g$g.iso" "$from" &
        pids+=($!)
    done
    wait "${pids[@]}" || true
}
for ((r = 1; r <= PAR_RUNS; r++)); do
    if ((r % 2)); then par_group par-http "$r"; par_group par-cd "$r"; else par_group par-cd "$r"; par_group par-http "$r"; fi
done
cut -d' ' -f1-3 /proc/loadavg > load-after

python3 "$ROOT/bench/netboot-report.py" "$CONTENDERS" "$RUNS" "$PAR_RUNS" | tee report.md
