# An overlay upper directory on a disk: the first boot writes and shuts
# down cleanly, the second finds the file.
if [ -f /root/overlay-persist ]; then
    echo "OVERLAY-PERSIST-2: found $(cat /root/overlay-persist)"
else
    echo "kept in the upper directory" > /root/overlay-persist
    echo "OVERLAY-PERSIST-1: written"
fi
. /tests/exitrd.sh
