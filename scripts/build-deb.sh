#!/usr/bin/env bash
# Builds the Debian package: target/debian/cloopbox_VERSION_amd64.deb, with
# dpkg-deb alone (no debhelper), reproducibly (SOURCE_DATE_EPOCH, default
# the last commit's time), and checks it with lintian when it is installed.
#
#   scripts/build-deb.sh [-b BINARY] [--no-lintian]
#
# What it installs, and how it lives beside other packages:
#   /usr/bin/cloopbox                    the static multicall binary
#   /usr/bin/{cloopinfo,cloopd,cow*}     applet links; no Debian package ships these names
#   (no link) create_compressed_fs, extract_compressed_fs: cloop-utils ships
#             both names; ours are `cloopbox create_compressed_fs ...`, so
#             the two packages install side by side and cloop-utils' tools
#             keep their names
#   (no link) init, liveroot, exitrd: boot-time applets, run as `cloopbox APPLET`
#   (no link) modprobe: the initramfs's (kmod owns the name on the system)
#   /usr/sbin/mklive                     root filesystem -> hybrid live ISO
#   /usr/sbin/cloopbox-mkinitramfs       the cloopbox live initramfs (initramfs-tools
#                                        owns the name mkinitramfs)
#   /usr/share/cloopbox/                 what the two scripts need beside them
#   /usr/lib/dracut/modules.d/50cloopbox the dracut module
#   /usr/share/initramfs-tools/{hooks,scripts}/cloopbox   boot=cloopbox
#   /usr/share/man/man1                  cloopbox(1), the linked applets under their
#                                        names, the others as cloopbox-APPLET(1)
#                                        (create_compressed_fs.1 is cloop-utils',
#                                        init.1 systemd's)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
BIN="" LINTIAN=1
while [ $# -gt 0 ]; do
    case $1 in
        -b) BIN=$2; shift 2 ;;
        --no-lintian) LINTIAN=0; shift ;;
        -h | --help) awk 'NR > 1 { if (!/^#/ || /^# shellcheck/) exit; print }' "$0"; exit 0 ;;
        *) echo "build-deb: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$BIN" ] || BIN=$("$root/scripts/build-static.sh")
version=$(awk -F'"' '/^version *=/ {print $2; exit}' "$root/Cargo.toml")
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}
out=$root/target/debian
pkg=$out/cloopbox_${version}_amd64
rm -rf "$pkg" && mkdir -p "$pkg/DEBIAN"

linked=(cloopinfo cloopd cowdev cowlist cowmerge cowpack cowrepair cowsync)
prefixed=(create_compressed_fs extract_compressed_fs init liveroot exitrd verity kexec modprobe)
install -D -m 0755 "$BIN" "$pkg/usr/bin/cloopbox"
for a in "${linked[@]}"; do ln -s cloopbox "$pkg/usr/bin/$a"; done

man=$pkg/usr/share/man/man1
mkdir -p "$man"
gzip -9n < "$root/man/cloopbox.1" > "$man/cloopbox.1.gz"
for a in "${linked[@]}"; do gzip -9n < "$root/man/$a.1" > "$man/$a.1.gz"; done
for a in "${prefixed[@]}"; do gzip -9n < "$root/man/$a.1" > "$man/cloopbox-$a.1.gz"; done
[ ! -f "$root/man/mklive.1" ] || gzip -9n < "$root/man/mklive.1" > "$man/mklive.1.gz"

share=$pkg/usr/share/cloopbox
install -D -m 0755 "$root/initramfs/mkinitramfs.sh" "$share/initramfs/mkinitramfs.sh"
mkdir -p "$pkg/usr/sbin"
ln -s ../share/cloopbox/initramfs/mkinitramfs.sh "$pkg/usr/sbin/cloopbox-mkinitramfs"
mkdir -p "$pkg/usr/share/man/man8"
gzip -9n < "$root/man/cloopbox-mkinitramfs.8" > "$pkg/usr/share/man/man8/cloopbox-mkinitramfs.8.gz"
if [ -f "$root/initramfs/mklive.sh" ]; then
    install -D -m 0755 "$root/initramfs/mklive.sh" "$share/initramfs/mklive.sh"
    ln -s ../share/cloopbox/initramfs/mklive.sh "$pkg/usr/sbin/mklive"
fi

dracut=$pkg/usr/lib/dracut/modules.d/50cloopbox
mkdir -p "$dracut"
for f in "$root"/dracut-module/50cloopbox/*; do install -m 0755 "$f" "$dracut/"; done

install -D -m 0755 "$root/packaging/initramfs-tools/hook" "$pkg/usr/share/initramfs-tools/hooks/cloopbox"
install -D -m 0644 "$root/packaging/initramfs-tools/script" "$pkg/usr/share/initramfs-tools/scripts/cloopbox"

doc=$pkg/usr/share/doc/cloopbox
install -D -m 0644 "$root/packaging/debian/copyright" "$doc/copyright"
for d in "$root"/docs/*.md; do gzip -9n < "$d" > "$doc/$(basename "$d").gz"; done
date=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
printf 'cloopbox (%s) unstable; urgency=medium\n\n  * Built from the cloopbox source tree.\n\n -- cloopbox developers <cloopbox@localhost.invalid>  %s\n' \
    "$version" "$date" | gzip -9n > "$doc/changelog.gz"
install -D -m 0644 "$root/packaging/debian/lintian-overrides" "$pkg/usr/share/lintian/overrides/cloopbox"

size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@SIZE@/$size/" "$root/packaging/debian/control" > "$pkg/DEBIAN/control"
(cd "$pkg" && find usr -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum > DEBIAN/md5sums)
chmod 0644 "$pkg/DEBIAN/control" "$pkg/DEBIAN/md5sums"
find "$pkg" -depth -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch --no-dereference --date="@$SOURCE_DATE_EPOCH"

deb=$out/cloopbox_${version}_amd64.deb
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "build-deb: $deb ($(stat -c %s "$deb") bytes)" >&2
if [ "$LINTIAN" = 1 ] && command -v lintian >/dev/null; then
    # Errors fail the build; warnings must be overridden with a reason
    # (packaging/debian/lintian-overrides) or fixed.
    lintian --fail-on error,warning --tag-display-limit 0 "$deb" >&2
    echo "build-deb: lintian: no errors, no warnings" >&2
fi
echo "$deb"
