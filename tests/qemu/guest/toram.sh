# The images were copied to RAM and the disc ejected by init; the host
# then takes the disc out of the drive. The system must not need it.
echo "TORAM-MOUNTS: $(awk '$2 ~ /^\/run\/initramfs\/(live|toram)$/ { printf "%s:%s ", $2, $3 }' /proc/mounts)"
for f in /run/initramfs/toram/*; do echo "TORAM-FILE: ${f##*/}"; done
i=0
while [ $i -lt 50 ] && dd if=/dev/sr0 of=/dev/null bs=2048 count=1 2>/dev/null; do sleep 0.2; i=$((i + 1)); done
if dd if=/dev/sr0 of=/dev/null bs=2048 count=1 2>/dev/null; then echo "TORAM: the disc is still readable"; else echo "TORAM: no disc in the drive"; fi
sync
echo 3 > /proc/sys/vm/drop_caches
n=$(find / -xdev -type f | wc -l)
if find / -xdev -type f -exec cat {} + > /dev/null; then echo "TORAM: read all $n files without the disc"; fi
