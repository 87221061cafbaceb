# net-http, net-iso: the payload (never read at boot) reads correctly
# over the network.
sum=$(sha256sum /payload.bin | cut -d" " -f1)
if [ "$sum" = "$(cat /payload.sha256)" ]; then echo "PAYLOAD: ok"; else echo "PAYLOAD: mismatch $sum"; fi
