#!/bin/sh
# cmdline hook 25: claims the root for cloopbox, before dmsquash-live (30).
#
#   root=live:cloop   a live root from a cloop image found by content
#   root=live:URL     (URL with a scheme: http://, https://) the cloop image
#                     or the ISO holding KNOPPIX/KNOPPIX on that server, read
#                     lazily; the network comes from dracut's network module
#                     (rd.neednet=1 is set here). If livenet is in this
#                     initramfs too, it keeps root=live:URL unless rd.cloopbox
#                     is given (docs/dracut.md)
#   rd.cloopbox       the same for Knoppix-style command lines without root=
#                     (it takes precedence over any root=); with httpfs=URL
#                     or fetch=URL a network root; rd.cloopbox=0 turns the
#                     module off
#
# Everything else is read by `cloopbox liveroot` from /proc/cmdline:
# knoppix_dir=, knoppix_name=, bootfrom=, rootdelay=, cowsize=, toram, ...
# Sourced by dracut: no exit, and no variables left behind but root/rootok.

# shellcheck source=/dev/null # dracut-lib.sh exists in the initramfs only
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh

[ -z "$root" ] && root=$(getarg root=)

_cb_url=""
case "$root" in
    live:*://*) _cb_url=${root#live:} ;;
esac
_cb_claim=""
if ! getargbool 1 rd.cloopbox; then
    :
elif getarg rd.cloopbox > /dev/null; then
    _cb_claim=1
    [ -z "$_cb_url" ] && _cb_url=$(getarg httpfs=)
    [ -z "$_cb_url" ] && _cb_url=$(getarg fetch=)
    case "$root" in
        "" | live:cloop | cloopbox | live:*://*) ;;
        *) warn "cloopbox: rd.cloopbox is set: ignoring root=$root" ;;
    esac
elif [ "$root" = "live:cloop" ]; then
    _cb_claim=1
elif [ -n "$_cb_url" ]; then
    if [ -x /sbin/livenetroot ]; then
        info "cloopbox: livenet is in this initramfs and takes root=$root (add rd.cloopbox for a lazy cloop root)"
        _cb_url=""
    else
        _cb_claim=1
    fi
fi

if [ -n "$_cb_claim" ]; then
    # Not live:..., so dmsquash-live's and livenet's parse hooks and
    # generators leave it alone; not a device path, so nothing waits for a
    # /dev/root.
    root=cloopbox
    # shellcheck disable=SC2034 # read by dracut after the cmdline hooks
    rootok=1
    mkdir -p /run/cloopbox
    # shellcheck disable=SC2154 # hookdir comes from dracut-lib.sh
    echo '[ -e /run/cloopbox/root-ready ]' > "$hookdir/initqueue/finished/cloopbox-root.sh"
    if [ -n "$_cb_url" ]; then
        # A network root: dracut's network module brings the interface up
        # (ip=, default DHCP) once it is asked to; each interface that comes
        # up runs the online hooks, and ours queues the one job.
        echo "$_cb_url" > /run/cloopbox/net-root
        mkdir -p "$hookdir/initqueue/online" /etc/cmdline.d
        getarg rd.neednet > /dev/null || echo "rd.neednet=1" > /etc/cmdline.d/50-cloopbox-neednet.conf
        echo '/sbin/initqueue --onetime --unique --name cloopbox-root /sbin/cloopbox-root' \
            > "$hookdir/initqueue/online/50-cloopbox-root.sh"
        info "cloopbox: the root is the cloop image at $_cb_url, read lazily once the network is up"
    else
        # The medium is found by content, not by a name udev could
        # announce: one job, once udev has settled; cloopbox waits for
        # late devices itself (rootdelay=).
        /sbin/initqueue --settled --onetime --unique --name cloopbox-root /sbin/cloopbox-root
        info "cloopbox: the root is a cloop live image (found by content)"
    fi
fi
unset _cb_url _cb_claim
