#!/bin/sh
# rdinit of the kernel-nbd scenario (qemu-test.sh): cowdev and cowsync
# against the kernel's NBD client, outside a live boot: attach a cloop image
# with a cowfile on a virtio disk, write through ext4, cowsync, list, stop
# and continue the server under I/O, refuse a detach while mounted, detach,
# re-attach and read back. Markers: KNBD: ...
PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
fail() { echo "KNBD: FAIL $*"; dmesg | grep -iE "nbd|ext4|block" | tail -20 | sed "s/^/KNBD-DMESG: /"; sync; poweroff -f; }
step() { echo "KNBD: $*"; }
# crc32c first: ext4 looks the algorithm up when it loads.
for m in crc32c_generic crc32c-intel nbd ext4 virtio_pci virtio_blk; do modprobe $m 2>/dev/null; done
for m in nbd ext4 virtio_blk; do [ -d /sys/module/$m ] || fail "module $m not loaded"; done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /data /mnt
mount -t ext4 /dev/vda /data || fail "mount the data disk"
dev=$(cowdev -a /base.cloop /data/my.cow auto) || fail "cowdev -a exited $?"
case $dev in /dev/nbd[0-9]*) step "attached $dev" ;; *) fail "cowdev -a printed \"$dev\"" ;; esac
nbd=${dev#/dev/}
mount -t ext4 -o noatime $dev /mnt || fail "mount $dev"
[ "$(cat /mnt/orig.txt)" = "original text" ] || fail "a file of the image reads wrong"
echo "written in the guest" > /mnt/new.txt
echo "changed" >> /mnt/orig.txt
dd if=/dev/urandom of=/mnt/big.bin bs=64k count=32 2>/dev/null || fail "write big.bin"
sync
cowsync || fail "cowsync exited $?"
cowdev -l | sed "s/^/KNBD-LIST: /"
cowdev -l -v $dev > /tmp/status || fail "cowdev -l -v exited $?"
sed "s/^/KNBD-STATUS: /" /tmp/status
cowlist /data/my.cow > /tmp/cowlist || fail "cowlist"
sed "s/^/KNBD-COWLIST: /" /tmp/cowlist
used=$(awk "/cowblocks in use/ { print \$4 }" /tmp/status)
listed=$(awk "/cowblocks in use/ { print \$4 }" /tmp/cowlist)
grep -q "state cowfile: *clean" /tmp/status || fail "status not clean after cowsync"
grep -q "state cowfile: *clean" /tmp/cowlist || fail "cowfile header not clean after cowsync"
[ "$used" = "$listed" ] && [ "$used" -gt 0 ] || fail "after cowsync: $used blocks in use, header says $listed"
step "cowsync clean, $used blocks in use"
pid=$(awk "/pid of thread/ { print \$NF }" /tmp/status)
[ -d /proc/$pid ] || fail "no server process \"$pid\""
# SIGSTOP and SIGCONT (systemd sends both at switch-root) during I/O.
(dd if=/dev/urandom of=/mnt/stop.bin bs=64k count=512 conv=fsync 2>/dev/null; echo $? > /tmp/dd.rc) &
writer=$!
sleep 0.5
kill -0 $writer 2>/dev/null && [ ! -f /tmp/dd.rc ] || fail "the writer finished before SIGSTOP"
kill -STOP $pid
sleep 2
[ "$(cut -d" " -f3 /proc/$pid/stat)" = T ] || fail "server not stopped"
kill -CONT $pid
wait $writer
[ "$(cat /tmp/dd.rc)" = 0 ] || fail "I/O failed across SIGSTOP/SIGCONT"
[ -e /sys/block/$nbd/pid ] || fail "$dev lost its connection"
dmesg | grep -qiE "$nbd: (shutting down|Connection timed out|Dead connection|Receive control failed)" && fail "kernel reset $dev"
step "I/O continued after SIGSTOP/SIGCONT"
sync
(cd /mnt && sha256sum orig.txt new.txt big.bin random.bin stop.bin) > /tmp/sums || fail "read back"
sed "s/^/KNBD-SUM: /" /tmp/sums
if cowdev -d $dev 2> /tmp/refused; then fail "cowdev -d detached a mounted device"; fi
sed "s/^/KNBD-REFUSED: /" /tmp/refused
grep -q "mounted on /mnt" /tmp/refused || fail "refusal does not name the mount"
[ "$(cat /mnt/new.txt)" = "written in the guest" ] || fail "mount broken after the refused detach"
step "detach refused while mounted"
umount /mnt || fail "umount"
cowdev -d $dev || fail "cowdev -d exited $?"
if [ -d /proc/$pid ] && [ "$(cut -d" " -f3 /proc/$pid/stat)" != Z ]; then fail "server $pid still running"; fi
cowdev -l | grep -q "^$dev " && fail "$dev still listed"
[ -e /sys/block/$nbd/pid ] && fail "$dev still connected"
step "detached $dev"
dev2=$(cowdev -a /base.cloop /data/my.cow) || fail "second cowdev -a exited $?"
mount -t ext4 -o ro $dev2 /mnt || fail "mount $dev2"
(cd /mnt && sha256sum orig.txt new.txt big.bin random.bin stop.bin) > /tmp/sums2 || fail "read back after re-attach"
cmp -s /tmp/sums /tmp/sums2 || fail "files differ after re-attach"
step "readback identical on $dev2"
umount /mnt && cowdev -d $dev2 || fail "second detach"
cowlist /data/my.cow | sed "s/^/KNBD-COWLIST2: /"
umount /data || fail "umount the data disk"
step DONE
poweroff -f
