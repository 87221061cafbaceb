# net-changed: the host replaces the image on the server when it sees
# CHANGE-READY. /payload.bin (never read before) must then fail to read:
# never data from the new image, nor a mix of the two.
echo "CHANGE-READY"
sleep 5
if sum=$(sha256sum /payload.bin 2>/dev/null | cut -d" " -f1) && [ -n "$sum" ]; then
    if [ "$sum" = "$(cat /payload.sha256)" ]; then echo "PAYLOAD-READ: old image's data"; else echo "PAYLOAD-READ: MIXED $sum"; fi
else
    echo "PAYLOAD-READ: failed"
fi
