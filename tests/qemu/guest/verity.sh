# Guest side of verity-tampered (tests/qemu/verity.sh): one byte of
# /verity/bad was flipped in the image, /verity/good was not. Reading the
# bad one must fail (EIO), never return data; the good one reads whole.
if cat /verity/bad > /tmp/bad 2> /tmp/bad.err; then
    echo "VERITY-BAD: read $(wc -c < /tmp/bad) bytes"
else
    echo "VERITY-BAD: refused: $(cat /tmp/bad.err)"
fi
if [ "$(sha256sum < /verity/good | cut -d' ' -f1)" = "$(cat /verity/good.sum)" ]; then
    echo "VERITY-GOOD: ok"
else
    echo "VERITY-GOOD: wrong"
fi
