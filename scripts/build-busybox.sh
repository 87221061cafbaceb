#!/usr/bin/env bash
# Builds the rescue shell of the live initramfs and prints its path on
# stdout: a static busybox with only the applets of
# initramfs/busybox-rescue.config, from Debian's own busybox source package
# (with Debian's patches, security fixes included), linked against musl.
# 0.24 MB of the initramfs (zstd -19) instead of Debian busybox-static's
# 0.92 MB (BENCHMARKS.md, "Binary and initramfs size").
#
# The source comes from the machine's own Debian mirror and suite (the
# first URIs/Suites of /etc/apt/sources.list.d/debian.sources), through a
# private apt configuration with a deb-src line: the machine's apt sources
# are not touched. apt checks the signed Sources index and the files'
# hashes; dpkg-source checks them again when it unpacks.
#
# Cached: the build lives in target/busybox/VERSION-HASH/ (HASH of the
# config and this script); a second run only prints the path (remove
# target/busybox to take a newer Debian source package). Reproducible:
# the same source and config give the same bytes (SOURCE_DATE_EPOCH fixes
# the version banner's date).
#
# Usage: scripts/build-busybox.sh [-q]
#   -q   quiet (errors only)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
QUIET=0
case "${1:-}" in
    -q) QUIET=1 ;;
    "") ;;
    -h | --help) awk 'NR > 1 { if (!/^#/) exit; print }' "$0"; exit 0 ;;
    *) echo "usage: build-busybox.sh [-q]" >&2; exit 2 ;;
esac
say() { [ "$QUIET" = 1 ] || echo "build-busybox: $*" >&2; }
die() { echo "build-busybox: $*" >&2; exit 1; }

config=$root/initramfs/busybox-rescue.config
cache=$root/target/busybox
# The applets initramfs/mkinitramfs.sh and the docs promise in the rescue
# shell; a build that lacks one is refused.
required=(sh ash setsid ls cat mount umount dmesg ps kill mkdir rm cp mv ln vi less grep sed awk blkid losetup sync
    poweroff reboot ip)

for tool in musl-gcc dpkg-source apt-get make bzip2; do
    command -v "$tool" >/dev/null || die "$tool is missing (scripts/setup.sh installs it)"
done
# The mirror and suite this machine already uses, and Debian's archive key.
sources=/etc/apt/sources.list.d/debian.sources
mirror="" suite=""
if [ -r "$sources" ]; then
    mirror=$(awk '/^URIs:/ { print $2; exit }' "$sources")
    suite=$(awk '/^Suites:/ { print $2; exit }' "$sources")
fi
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
    read -r mirror suite < <(awk '$1 == "deb" && $2 !~ /^\[/ { print $2, $3; exit }' /etc/apt/sources.list) || true
fi
[ -n "$mirror" ] && [ -n "$suite" ] || die "no Debian mirror found in $sources or /etc/apt/sources.list"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$keyring" ] || die "$keyring is missing (package debian-archive-keyring)"

mkdir -p "$cache"
# One build at a time (qemu-test.sh's parallel jobs may all ask at once);
# the others then find it cached.
exec 9> "$cache/.lock"
flock 9
apt_dir=$cache/apt
mkdir -p "$apt_dir"/{lists/partial,cache/archives/partial,parts}
printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' "$mirror" "$suite" "$keyring" \
    > "$apt_dir/parts/busybox-src.sources"
apt_opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt_dir/parts"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
    -o "Dir::Cache::Archives=$apt_dir/cache/archives" -o Dir::State::Status=/dev/null
    -o APT::Sandbox::User=root)

# The version: from the index fetched last time if it is there, so that a
# cached build needs no network; otherwise (or if that version's build is
# missing) from a fresh index.
version_of() { apt-cache "${apt_opts[@]}" showsrc busybox 2>/dev/null | awk '/^Version:/ { print $2; exit }'; }
version=$(version_of || true)
key=$( (cat "$config" "$0") | sha256sum | cut -c1-12)
out_dir() { echo "$cache/${1//[:~]/_}-$key"; }
if [ -n "$version" ] && [ -x "$(out_dir "$version")/busybox" ]; then
    echo "$(out_dir "$version")/busybox"
    exit 0
fi
say "fetching the busybox source index for $suite from $mirror"
apt-get "${apt_opts[@]}" -qq update >&2 || die "apt-get update of $mirror $suite (deb-src) failed"
version=$(version_of)
[ -n "$version" ] || die "$mirror $suite offers no busybox source package"
dir=$(out_dir "$version")
if [ -x "$dir/busybox" ]; then
    echo "$dir/busybox"
    exit 0
fi

work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
say "downloading busybox $version (source)"
(cd "$work" && apt-get "${apt_opts[@]}" -qq source --download-only "busybox=$version" >&2) ||
    die "downloading the busybox $version source package failed"
dsc=$(ls "$work"/busybox_*.dsc)
# apt checked every file against the signed Sources index; dpkg-source
# checks the tarballs against the .dsc's hashes again (and warns that it
# has no keyring for the .dsc's own signature: the index vouches for it).
dpkg-source -x "$dsc" "$work/src" > "$work/unpack.log" 2>&1 ||
    { cat "$work/unpack.log" >&2; die "unpacking $dsc failed"; }

# musl's headers lack the kernel's; busybox needs a few (loop devices,
# netlink, fs ioctls). Only those three directories are added, after
# musl's own, so libc's headers are never glibc's.
mkdir -p "$work/kinc"
for d in linux asm-generic; do ln -s "/usr/include/$d" "$work/kinc/$d"; done
if [ -d /usr/include/x86_64-linux-gnu/asm ]; then ln -s /usr/include/x86_64-linux-gnu/asm "$work/kinc/asm"; else ln -s /usr/include/asm "$work/kinc/asm"; fi
[ -r "$work/kinc/linux/loop.h" ] || die "/usr/include/linux/loop.h is missing (package linux-libc-dev)"

say "building busybox $version with $(grep -c '=y' "$config") options of $(basename "$config")"
export SOURCE_DATE_EPOCH=0
mk=(make -C "$work/src" -s CC=musl-gcc HOSTCC=gcc "EXTRA_CFLAGS=-idirafter $work/kinc"
    "BB_EXTRA_VERSION=Debian $version, cloopbox rescue shell")
# allnoconfig, then the config's lines in place of the defaults, then
# oldconfig to settle dependencies (busybox's kconfig does not keep
# KCONFIG_ALLCONFIG's choices through allnoconfig).
"${mk[@]}" allnoconfig >/dev/null 2>&1 || die "make allnoconfig failed"
grep -E '^CONFIG_[A-Z0-9_]+=' "$config" | while IFS= read -r line; do
    sed -i -e "/^${line%%=*}=/d" -e "/^# ${line%%=*} is not set\$/d" "$work/src/.config"
    echo "$line" >> "$work/src/.config"
done
sed -i -E 's/^(CONFIG_[A-Z0-9_]+)=n$/# \1 is not set/' "$work/src/.config"
"${mk[@]}" oldconfig < <(yes "") >/dev/null 2>&1 || die "make oldconfig failed"
# Every option the config asks for must have taken: a name that does not
# exist (a typo, or gone in a newer busybox) would otherwise be dropped
# without a word.
while IFS= read -r line; do
    case $line in
        CONFIG_*=n) ! grep -q "^${line%%=*}=y" "$work/src/.config" ||
            die "$(basename "$config"): $line did not take" ;;
        CONFIG_*=*) grep -qxF "$line" "$work/src/.config" ||
            die "$(basename "$config"): $line did not take (no such option in busybox $version?)" ;;
    esac
done < "$config"
log=$work/build.log
"${mk[@]}" -j"$(nproc)" busybox > "$log" 2>&1 || { tail -30 "$log" >&2; die "building busybox failed (above)"; }

bin=$work/src/busybox
if readelf -lW "$bin" | grep -q INTERP; then die "the build is not static"; fi
have=$("$bin" --list) || die "the built busybox does not run"
for a in "${required[@]}"; do
    grep -qx "$a" <<< "$have" || die "the built busybox lacks the applet $a (add it to $(basename "$config"))"
done
[ "$("$bin" sh -c 'echo $((6*7))')" = 42 ] || die "the built busybox's shell does not work"

mkdir -p "$dir"
install -m 0755 "$bin" "$dir/busybox.tmp"
install -m 0644 "$work/src/.config" "$dir/config"
mv "$dir/busybox.tmp" "$dir/busybox"
# Builds of an older config or source are of no further use.
for old in "$cache"/*-*/; do
    [ "${old%/}" = "$dir" ] || [ ! -x "$old/busybox" ] || rm -rf "$old"
done
say "$dir/busybox: $(stat -c %s "$dir/busybox") bytes, $(wc -l <<< "$have") applets"
echo "$dir/busybox"
