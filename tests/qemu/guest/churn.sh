# Sourced by the persistence scripts (persist.sh, fat-persist.sh): new
# files of COUNT 4 KiB blocks, each written with fsync, one after another
# in the background until the machine goes down. Every fsync is a cloopd
# flush that sets new bitmap bits, so the cowfile never goes idle and clean.
churn() { # COUNT
    i=0
    while :; do
        dd if=/dev/urandom of=/root/churn$i bs=4k count=$1 conv=fsync 2>/dev/null
        i=$((i + 1))
    done &
}
