#!/bin/sh
# cmdline hook 25: claims the root for cloopbox, before dmsquash-live (30).
#
#   root=live:cloop   a live root from a cloop image found by content
#   rd.cloopbox       the same for Knoppix-style command lines without root=
#                     (it takes precedence over any root=); rd.cloopbox=0
#                     turns the module off
#
# Everything else is read by `cloopbox liveroot` from /proc/cmdline:
# knoppix_dir=, knoppix_name=, bootfrom=, rootdelay=, cowsize=, toram, ...
# Sourced by dracut: no exit, and no variables left behind but root/rootok.

# shellcheck source=/dev/null # dracut-lib.sh exists in the initramfs only
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh

[ -z "$root" ] && root=$(getarg root=)

if getargbool 1 rd.cloopbox && { [ "$root" = "live:cloop" ] || getarg rd.cloopbox > /dev/null; }; then
    case "$root" in
        "" | live:cloop | cloopbox) ;;
        *) warn "cloopbox: rd.cloopbox is set: ignoring root=$root" ;;
    esac
    # Not live:..., so dmsquash-live's parse hook and generator leave it
    # alone; not a device path, so nothing waits for a /dev/root.
    root=cloopbox
    # shellcheck disable=SC2034 # read by dracut after the cmdline hooks
    rootok=1
    # The medium is found by content, not by a name udev could announce:
    # one job, once udev has settled; cloopbox waits for late devices
    # itself (rootdelay=).
    /sbin/initqueue --settled --onetime --unique --name cloopbox-root /sbin/cloopbox-root
    # shellcheck disable=SC2154 # hookdir comes from dracut-lib.sh
    echo '[ -e /run/cloopbox/root-ready ]' > "$hookdir/initqueue/finished/cloopbox-root.sh"
    info "cloopbox: the root is a cloop live image (found by content)"
fi
