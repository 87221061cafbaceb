# Memory pressure (tests/qemu/failures.sh, oom; the guest has little RAM):
# a reader goes through every file of the root, dropping the caches each
# round, so the root daemon keeps serving, while a memory hog (busybox dd
# with one 240 MiB buffer, filled at once from /dev/zero) runs three
# times. (sort fed endless lines grew too slowly: the guest thrashed its
# page cache for 300 s without an OOM kill.) The kernel must
# kill the hog, never the daemon (oom_score_adj -1000, mlockall).
pid=$(for p in /proc/[0-9]*; do case "$(tr "\0" " " 2>/dev/null < $p/cmdline)" in "@cloopd "*) echo ${p#/proc/} ;; esac; done | head -n 1)
echo "OOM: daemon $pid, oom_score_adj $(cat /proc/$pid/oom_score_adj), $(grep VmLck /proc/$pid/status | tr -s " \t" " ")"
echo "OOM: $(awk '/^MemTotal/ { print $2 " KiB" }' /proc/meminfo) of RAM"
(
    while :; do
        echo 3 > /proc/sys/vm/drop_caches
        find / -xdev -type f -exec cat {} + > /dev/null 2>&1
    done
) &
reader=$!
n=0
while [ $n -lt 3 ]; do
    dd if=/dev/zero of=/dev/null bs=240M count=4 2>/dev/null
    echo "OOM: hog $n ended with status $?"
    n=$((n + 1))
done
kill $reader
wait $reader 2>/dev/null
sync
echo 3 > /proc/sys/vm/drop_caches
[ -d /proc/$pid ] && echo "OOM: daemon $pid still alive: $(tr "\0" " " < /proc/$pid/cmdline)"
echo "OOM-SUM: $(sha256sum < /bin/busybox | cut -d" " -f1) /bin/busybox"
