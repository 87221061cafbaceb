# net-outage: the host stops nginx when it sees OUTAGE-READY and starts it
# again 20 s later. Meanwhile every block of /payload.bin (never read
# before) must come from the server: the read stalls, then completes with
# the right data, and the kernel saw no I/O error.
echo "OUTAGE-READY"
sleep 5
echo "OUTAGE-READ: start $(date +%s)"
sum=$(sha256sum /payload.bin | cut -d" " -f1)
echo "OUTAGE-READ: end $(date +%s)"
if [ "$sum" = "$(cat /payload.sha256)" ]; then echo "PAYLOAD: ok"; else echo "PAYLOAD: mismatch $sum"; fi
echo "IOERRORS: $(dmesg | grep -ciE 'I/O error|blk_update_request|critical medium error')"
