# A clean shutdown through the exit initramfs.
. /tests/exitrd.sh
