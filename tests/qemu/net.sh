# shellcheck shell=bash
# Network boot (issue 12): the busybox live root, with a 16 MiB random
# /payload.bin that the boot never reads, served by an nginx of the
# scenario's own on a free port of 127.0.0.1 (its own prefix and access
# log in the scenario's directory). The guest boots our initramfs built
# with -N and brings its virtio NIC up with its own DHCP client.
#
# The guest reaches the host ONLY through QEMU user networking with
# restrict=on and guestfwd rules: 10.0.2.100:80 is nginx, 10.0.2.101:53 a
# DNS responder of ours (tests/qemu/dns-tcp.py, DNS over TCP) that knows
# one name, images.test. restrict=on drops every other packet inside QEMU
# (slirp's DHCP server still answers), so nothing leaves the machine: no
# DNS query reaches slirp's forwarder (the guest's UDP query to
# 10.0.2.101 is dropped; the resolver falls back to TCP, RFC 7766).
# With restrict=on slirp's DHCP server leaves out the router and DNS
# options, so the lease checked here has neither (their parsing is unit-
# tested in src/net/dhcp.rs); 10.0.2.100 is on the link anyway.
# The rules use guestfwd's cmd: form, one `busybox nc 127.0.0.1 PORT` per
# connection: the chardev form (tcp:127.0.0.1:PORT) is ONE host connection
# opened when QEMU starts, which cannot carry several HTTP connections nor
# come back after nginx restarts (net-outage).
#
#   net-http     httpfs=http://images.test/root.cloop (a name: DHCP, then
#                DNS over TCP): root up; the access log shows far fewer
#                bytes sent than the image has
#   net-iso      root=live:http://10.0.2.100/live.iso: KNOPPIX/KNOPPIX
#                found inside the ISO; the payload reads correctly
#   net-fetch    fetch=URL: the whole image downloaded into RAM first,
#                ip= with a static address
#   net-outage   nginx stopped for 20 s while the guest reads the payload:
#                the read stalls, resumes, right data, no I/O error
#   net-changed  the image replaced on the server under the guest: the
#                console says so, the read fails, never the new data
#   net-debian   the Debian systemd root (debian.sh's checks: multi-user,
#                writes, fstrim, clean poweroff through the exit initramfs)
#                from httpfs=, its network kept up by the live system
#   net-https    httpfs=https://images.test/root.cloop: nginx with TLS
#                (a test CA made by openssl, a certificate for
#                images.test) behind 10.0.2.100:443; the initramfs from
#                `mklive -N --ca CA` trusts the CA through
#                /etc/cloopbox/ca.pem. Root up; every request nginx logged
#                was TLS; far fewer bytes sent than the image has
#   net-https-noca  the same server, the initramfs without the CA: the
#                boot refuses with the URL and "certificate not trusted:
#                unknown issuer", then the rescue shell; no request ever
#                reached nginx
#   net-verity   httpfs= of verity.sh's verified image with
#                cloopbox.verity=: init finds URL.verity on the server by
#                itself and says it matches, the daemon runs with
#                --root-hash, its status counts blocks checked and none
#                refused, nginx sent the tree
#   net-verity-tampered
#                verity-tampered's image (one byte of /verity/bad flipped)
#                on the server: EIO for exactly that file, the block and the
#                URL named on the console, /verity/good reads whole
#   net-verity-refused
#                the verified image on the server without its tree, then
#                (a second boot) with the tree and a wrong root hash: both
#                refused naming the URL, rescue shell, nothing served
#   net-verity-fetch
#                fetch= of the verified image (as vroot.cloop: the one
#                root hash is the network root's whatever its name): its
#                tree comes along into RAM, the copy is served with
#                --root-hash and checked
#   net-cow      persistence with a network root: httpfs= and
#                cow=LABEL=NETCOW:/live/knoppix.cow on a local ext4 disk;
#                boot 1 writes its boot id and powers off through the
#                exitrd, boot 2 finds it; the host reads the cowfile off
#                the disk (cowlist: clean). Then the same for an overlayfs
#                root (an iso9660 image on the server, the upper directory
#                on the disk)
ALL_SCENARIOS+=(net-http net-iso net-fetch net-outage net-changed net-debian net-https net-https-noca
    net-verity net-verity-tampered net-verity-refused net-verity-fetch net-cow)

NET_DIR=$WORK/net

# net_prepare: the images (A and B differ in the payload only), the ISO
# built by `mklive -N` and its network initramfs (boot/initrd.gz, taken
# out of the ISO: every network scenario boots what mklive -N made), once
# per run.
net_prepare() {
    [ -n "${NET_READY:-}" ] && return 0
    once net net_prepare_build
    NET_READY=1
}
net_prepare_build() {
    local r
    mkdir -p "$NET_DIR"
    for r in a b; do
        make_rootfs "$NET_DIR/rootfs-$r"
        head -c $((16 << 20)) /dev/urandom > "$NET_DIR/rootfs-$r/payload.bin"
        sha256sum < "$NET_DIR/rootfs-$r/payload.bin" | cut -d' ' -f1 > "$NET_DIR/rootfs-$r/payload.sha256"
        cloop_of ext4 "$NET_DIR/rootfs-$r" "$NET_DIR/root-$r.cloop"
        rm -rf "$NET_DIR/rootfs-$r"
    done
    mklive -N --append "$APPEND_BASE" --image "$NET_DIR/root-a.cloop" -o "$NET_DIR/live.iso"
    rm -f "$NET_DIR/initrd.gz"
    xorriso -osirrox on -indev "$NET_DIR/live.iso" -extract /boot/initrd.gz "$NET_DIR/initrd.gz" 2>/dev/null
    [ -s "$NET_DIR/initrd.gz" ] || { log "net: no boot/initrd.gz in the mklive -N ISO"; return 1; }
}

# net_tls_prepare: a test CA and a certificate for images.test it signed
# (NET_DIR/tls/{ca,server}.{pem,key}), and the initramfs of `mklive -N
# --ca` (NET_DIR/initrd-ca.gz), once per run.
net_tls_prepare() {
    net_prepare
    once net-tls net_tls_build
}
net_tls_build() {
    local t=$NET_DIR/tls ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
    rm -rf "$t" && mkdir -p "$t"
    openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=cloopbox net-https test CA" -keyout "$t/ca.key" -out "$t/ca.pem" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2> /dev/null
    openssl req -new "${ec[@]}" -subj "/CN=images.test" -keyout "$t/server.key" -out "$t/server.csr" 2> /dev/null
    printf 'subjectAltName=DNS:images.test\nextendedKeyUsage=serverAuth\n' > "$t/ext"
    openssl x509 -req -in "$t/server.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial -days 2 \
        -extfile "$t/ext" -out "$t/server.pem" 2> /dev/null
    [ -s "$t/server.pem" ] || { log "net-https: openssl made no server certificate"; return 1; }
    mklive -N --ca "$t/ca.pem" --append "$APPEND_BASE" --image "$NET_DIR/root-a.cloop" -o "$NET_DIR/live-ca.iso"
    rm -f "$NET_DIR/initrd-ca.gz"
    xorriso -osirrox on -indev "$NET_DIR/live-ca.iso" -extract /boot/initrd.gz "$NET_DIR/initrd-ca.gz" 2> /dev/null
    rm -f "$NET_DIR/live-ca.iso"
    [ -s "$NET_DIR/initrd-ca.gz" ] || { log "net-https: no boot/initrd.gz in the mklive -N --ca ISO"; return 1; }
}

# net_nginx_start DIR: nginx serving DIR/www on a free port of 127.0.0.1,
# access log DIR/access.log ("status body-bytes uri range tls-protocol");
# sets NGINX_PORT. With NET_TLS set, also with TLS (NET_DIR/tls's server
# certificate) on NGINX_TLS_PORT.
net_nginx_start() {
    # A free port can be taken by another job between net_free_port and
    # nginx's bind: nginx then exits at once, and new ports are tried.
    local try fixed=${NGINX_PORT:+1}
    for try in 1 2 3; do
        net_nginx_start_once "$@" && return 0
        [ -z "$fixed" ] && [ -s "$1/nginx.start.err" ] || break
        log "nginx: $(tail -1 "$1/nginx.start.err"); trying other ports"
        NGINX_PORT="" NGINX_TLS_PORT=""
    done
    return 1
}
net_nginx_start_once() {
    local d=$1 i tls=""
    mkdir -p "$d/www" "$d/tmp"
    NGINX_PORT=${NGINX_PORT:-$(net_free_port)}
    if [ -n "${NET_TLS:-}" ]; then
        NGINX_TLS_PORT=${NGINX_TLS_PORT:-$(net_free_port)}
        tls="server { listen 127.0.0.1:$NGINX_TLS_PORT ssl; root $d/www;
        ssl_certificate $NET_DIR/tls/server.pem; ssl_certificate_key $NET_DIR/tls/server.key; }"
    fi
    cat > "$d/nginx.conf" <<CONF
user root;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log info;
events { worker_connections 64; }
http {
    log_format t '\$status \$body_bytes_sent \$uri "\$http_range" \$ssl_protocol';
    access_log $d/access.log t;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    default_type application/octet-stream;
    keepalive_timeout 60s;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $d/www;
    }
    $tls
}
CONF
    if ! nginx -p "$d" -c "$d/nginx.conf" 2> "$d/nginx.start.err"; then
        log "nginx did not start on 127.0.0.1:$NGINX_PORT: $(tail -1 "$d/nginx.start.err")"
        return 1
    fi
    rm -f "$d/nginx.start.err"
    for i in $(seq 50); do
        (exec 3<> "/dev/tcp/127.0.0.1/$NGINX_PORT") 2> /dev/null && return 0
        sleep 0.1
    done
    log "nginx did not start on 127.0.0.1:$NGINX_PORT (see $d/error.log)"
    return 1
}

net_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# net_nginx_stop DIR: stops that nginx and waits until it is gone.
net_nginx_stop() {
    local d=$1 pid i
    pid=$(cat "$d/nginx.pid" 2> /dev/null) || return 0
    kill -TERM "$pid" 2> /dev/null || return 0
    for i in $(seq 100); do kill -0 "$pid" 2> /dev/null || return 0; sleep 0.1; done
}

# net_dns_start DIR: the DNS-over-TCP responder (images.test is
# 10.0.2.100); sets DNS_PORT and DNS_PID.
net_dns_start() {
    local d=$1 i
    rm -f "$d/dns.port"
    python3 "$QEMU_LIB_ROOT/tests/qemu/dns-tcp.py" "$d/dns.port" "$d/dns.log" images.test=10.0.2.100 &
    DNS_PID=$!
    for i in $(seq 50); do [ -s "$d/dns.port" ] && break; sleep 0.1; done
    DNS_PORT=$(cat "$d/dns.port")
}

# net_bytes DIR URI: body bytes nginx sent for URI.
net_bytes() {
    awk -v u="$2" '$3 == u { s += $2 } END { print s + 0 }' "$1/access.log"
}

# net_netdev: NET_NETDEV, QEMU's -netdev n0 with only the guestfwd rules
# to nginx and (if DNS_PORT is set) the DNS responder.
net_netdev() {
    NET_NETDEV="user,id=n0,restrict=on,net=10.0.2.0/24"
    # slirp gives the command the connection as stdin, stdout and stderr:
    # nc's complaints (nginx down) must not reach the guest as data.
    NET_NETDEV+=",guestfwd=tcp:10.0.2.100:80-cmd:sh -c 'exec busybox nc 127.0.0.1 $NGINX_PORT 2>/dev/null'"
    [ -z "${NGINX_TLS_PORT:-}" ] || NET_NETDEV+=",guestfwd=tcp:10.0.2.100:443-cmd:sh -c 'exec busybox nc 127.0.0.1 $NGINX_TLS_PORT 2>/dev/null'"
    [ -z "${DNS_PORT:-}" ] || NET_NETDEV+=",guestfwd=tcp:10.0.2.101:53-cmd:sh -c 'exec busybox nc 127.0.0.1 $DNS_PORT 2>/dev/null'"
}

# net_qemu APPEND: NET_QEMU, the QEMU arguments of a guest with the -N
# initramfs (NET_INITRD if set), a virtio NIC and only the guestfwd rules
# (net_netdev).
net_qemu() {
    net_netdev
    NET_QEMU=(-kernel "$KERNEL" -initrd "${NET_INITRD:-$NET_DIR/initrd.gz}" -append "$1" -netdev "$NET_NETDEV" -device virtio-net-pci,netdev=n0)
}

# net_boot NAME DIR APPEND: the busybox root's guest (net_qemu).
net_boot() {
    net_qemu "$APPEND_BASE no_timer_check $3"
    boot "$1" "$UNTIL_LIVE" "${NET_QEMU[@]}"
}

# net_setup NAME: a fresh directory for NAME with nginx serving the images,
# and the DNS responder.
net_setup() {
    net_prepare
    ND=$NET_DIR/$1
    rm -rf "$ND" && mkdir -p "$ND/www"
    cp "$NET_DIR/root-a.cloop" "$ND/www/root.cloop"
    cp "$NET_DIR/live.iso" "$ND/www/live.iso"
    NGINX_PORT="" NGINX_TLS_PORT="" DNS_PORT="" DNS_PID=""
    net_nginx_start "$ND"
    net_dns_start "$ND"
}

net_teardown() {
    net_nginx_stop "$ND"
    [ -z "${DNS_PID:-}" ] || kill "$DNS_PID" 2> /dev/null || true
}

NET_ROOT_CHECKS=("DHCP on eth0: lease of 10.0.2.15/24 from 10.0.2.2" "ROOTFS: /dev/nbd[0-9]+ ext4" "COWMOUNT: tmpfs"
    "DAEMON: [0-9]+ @cloopd" "WRITE: written at boot" "CHECKS-DONE")
NET_ABSENT=("I/O error" "blk_update_request")

# net_run NAME FILE APPEND [MARK ACTION]: net_setup, the guest (with
# net_watch MARK ACTION if given), net_teardown; SIZE and SENT are then
# FILE's size and the bytes nginx sent of it.
net_run() {
    local name=$1 file=$2 append=$3
    net_setup "$name"
    WATCH_PID=""
    if [ $# -gt 3 ]; then
        rm -f "$LOGS/$name.log"
        net_watch "$name" "$4" "$5"
    fi
    net_boot "$name" "$ND" "$append"
    [ -z "$WATCH_PID" ] || wait "$WATCH_PID" || true
    net_teardown
    SIZE=$(stat -c %s "$ND/www/$file")
    SENT=$(net_bytes "$ND" "/$file")
}

scenario_net-http() {
    net_run net-http root.cloop "httpfs=http://images.test/root.cloop nameserver=10.0.2.101"
    local size=$SIZE sent=$SENT
    log "net-http: nginx sent $sent bytes of the $size-byte image"
    check_absent net-http "lazy boot over HTTP by name: nginx sent $sent of $size bytes" NET_ABSENT \
        "${NET_ROOT_CHECKS[@]}" "network: eth0 \\(.*\\) is 10.0.2.15/24, gateway none, DNS 10.0.2.101" \
        "served on /dev/nbd[0-9]+ by pid"
    grep -q "query images.test -> 10.0.2.100" "$ND/dns.log" ||
        record net-http-dns FAIL - "the guest never asked our DNS responder for images.test"
    # Far less than the image: a third at most (the boot reads a few MiB of
    # a root whose 16 MiB payload is never read).
    [ "$sent" -gt 0 ] && [ $((sent * 3)) -lt "$size" ] ||
        record net-http-bytes FAIL - "nginx sent $sent bytes of the $size-byte image: not lazy"
}

scenario_net-iso() {
    net_run net-iso live.iso "root=live:http://10.0.2.100/live.iso cloopbox.test=net-read"
    check_absent net-iso "root=live: names an ISO; nginx sent $SENT of $SIZE bytes" NET_ABSENT \
        "${NET_ROOT_CHECKS[@]}" "ISO file KNOPPIX/KNOPPIX" "PAYLOAD: ok"
}

scenario_net-fetch() {
    net_run net-fetch root.cloop \
        "fetch=http://10.0.2.100/root.cloop ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off cloopbox.test=net-fetch"
    check_absent net-fetch "fetch= into RAM with a static ip=: nginx sent $SENT of $SIZE bytes" NET_ABSENT \
        "network: eth0 \\(.*\\) is 10.0.2.15/24, gateway 10.0.2.2" "fetch: [0-9]+ MiB copied in" \
        "FETCH-MOUNTS: tmpfs" "FETCH-FILE: root.cloop" "PAYLOAD: ok" "ROOTFS: /dev/nbd[0-9]+ ext4" "CHECKS-DONE"
    [ "$SENT" -ge "$SIZE" ] || record net-fetch-bytes FAIL - "nginx sent $SENT bytes, less than the $SIZE-byte image"
    ! grep -q "DHCP on" "$LOGS/net-fetch.log" || record net-fetch-static FAIL - "DHCP ran despite a static ip="
}

# net_watch NAME MARK ACTION...: in the background, runs ACTION once MARK
# appears in the guest's console log (bounded by TIMEOUT).
net_watch() {
    local name=$1 mark=$2
    shift 2
    (
        for _ in $(seq $((${TIMEOUT:-300} * 5))); do
            grep -q "$mark" "$LOGS/$name.log" 2> /dev/null && { "$@"; exit 0; }
            sleep 0.2
        done
    ) &
    WATCH_PID=$!
}

net_outage() {
    net_nginx_stop "$ND"
    echo "stopped $(date +%s)" >> "$ND/outage"
    sleep 20
    net_nginx_start "$ND"
    echo "started $(date +%s)" >> "$ND/outage"
}

scenario_net-outage() {
    net_run net-outage root.cloop "httpfs=http://10.0.2.100/root.cloop cloopbox.test=net-outage" OUTAGE-READY net_outage
    check_absent net-outage "nginx down 20 s under I/O: stalled, resumed, right data ($(tr '\n' ' ' < "$ND/outage" 2> /dev/null))" \
        NET_ABSENT "${NET_ROOT_CHECKS[@]}" "server unreachable .*waiting" "the server answers again, I/O resumed" \
        "PAYLOAD: ok" "IOERRORS: 0"
    grep -q started "$ND/outage" 2> /dev/null || record net-outage-host FAIL - "the host never stopped and restarted nginx"
}

net_replace() {
    cp "$NET_DIR/root-b.cloop" "$ND/www/root.cloop.new"
    mv "$ND/www/root.cloop.new" "$ND/www/root.cloop"
    echo "replaced $(date +%s)" >> "$ND/changed"
}

scenario_net-changed() {
    net_run net-changed root.cloop "httpfs=http://10.0.2.100/root.cloop cloopbox.test=net-changed" CHANGE-READY net_replace
    local refused=(MIXED "old image's data")
    check_absent net-changed "image replaced on the server: clear message, reads fail, no mixed data" refused \
        "${NET_ROOT_CHECKS[@]}" "the image on the server changed .*refusing to mix two images" "PAYLOAD-READ: failed"
    # If-Match made nginx refuse the changed file: 412s in its log.
    grep -q '^412 ' "$ND/access.log" || record net-changed-412 FAIL - "nginx never answered 412 to If-Match"
}

scenario_net-debian() {
    prepare_debian
    net_setup net-debian
    # A hard link: the same bytes, named as the cowfile check expects.
    ln -f "$DEBIAN_CLOOP" "$ND/www/KNOPPIX"
    net_qemu "$DEBIAN_APPEND no_timer_check httpfs=http://10.0.2.100/KNOPPIX"
    debian_systemd net-debian "${NET_QEMU[@]}"
    net_teardown
    local size sent
    size=$(stat -c %s "$ND/www/KNOPPIX")
    sent=$(net_bytes "$ND" /KNOPPIX)
    log "net-debian: nginx sent $sent bytes of the $size-byte image"
    [ "$sent" -gt 0 ] && [ "$sent" -lt "$size" ] ||
        record net-debian-bytes FAIL - "nginx sent $sent bytes of the $size-byte image"
}

# net_https NAME INITRD: net_run over TLS with INITRD; PROTOCOLS is then
# the TLS protocols in nginx's access log, one per request ("-" for plain
# HTTP), sorted and counted.
net_https() {
    net_tls_prepare
    NET_TLS=1 NET_INITRD=$2 net_run "$1" root.cloop "httpfs=https://images.test/root.cloop nameserver=10.0.2.101"
    PROTOCOLS=$(awk '{ print $NF }' "$ND/access.log" | sort | uniq -c | tr -s ' \n' ' ')
}

scenario_net-https() {
    net_https net-https "$NET_DIR/initrd-ca.gz"
    log "net-https: nginx sent $SENT bytes of the $SIZE-byte image; requests by protocol:$PROTOCOLS"
    check_absent net-https "lazy boot over HTTPS by name, CA from mklive --ca: nginx sent $SENT of $SIZE bytes;$PROTOCOLS" \
        NET_ABSENT "${NET_ROOT_CHECKS[@]}" "image on the server: https://images.test/root.cloop" \
        "DAEMON: [0-9]+ @cloopd .*--ca-file /etc/cloopbox/ca.pem"
    # Every request went over TLS, and there were some.
    awk '$NF !~ /^TLSv1\.[23]$/ { bad = 1 } END { exit bad || NR == 0 }' "$ND/access.log" ||
        record net-https-tls FAIL - "nginx logged requests without TLS (or none):$PROTOCOLS"
    [ "$SENT" -gt 0 ] && [ $((SENT * 3)) -lt "$SIZE" ] ||
        record net-https-bytes FAIL - "nginx sent $SENT bytes of the $SIZE-byte image: not lazy"
}

scenario_net-https-noca() {
    net_https net-https-noca "$NET_DIR/initrd.gz"
    local refused=("ROOTFS: " "CHECKS-DONE")
    check_absent net-https-noca "HTTPS without the CA: refused with the URL and the certificate problem, rescue shell" \
        refused "https://images.test/root.cloop: probe: certificate not trusted: unknown issuer" "cloopbox rescue"
    # The handshake failed: no request reached nginx.
    [ ! -s "$ND/access.log" ] ||
        record net-https-noca-log FAIL - "nginx logged requests although the certificate was refused"
}

# net_verity_setup NAME IMAGE TREE [FILE]: net_setup NAME, with IMAGE on
# the server as /FILE (default KNOPPIX) and TREE (if not empty) as
# /FILE.verity.
net_verity_setup() {
    local file=${4:-KNOPPIX}
    net_setup "$1"
    cp "$2" "$ND/www/$file"
    [ -z "$3" ] || cp "$3" "$ND/www/$file.verity"
}

# What a verifying daemon over HTTP produces (verity.sh's
# verity_served_checks, with the tree's URL).
net_verity_checks() { # ROOTHASH
    NET_VERITY_SERVED=("http://10.0.2.100/KNOPPIX: hash tree http://10.0.2.100/KNOPPIX.verity matches root hash ${1:0:16}"
        "DAEMON: [0-9]+ @cloopd .*--root-hash $1" "CTL: +verity checked: +[1-9][0-9]*\b" "CTL: +verity refused: +0\b")
}

scenario_net-verity() {
    verity_image
    net_verity_setup net-verity "$VERITY_WORK/root.cloop" "$VERITY_WORK/root.cloop.verity"
    net_boot net-verity "$ND" "httpfs=http://10.0.2.100/KNOPPIX cloopbox.verity=$VERITY_ROOT"
    net_teardown
    net_verity_checks "$VERITY_ROOT"
    local forbid=("${NET_ABSENT[@]}" "boot failed" "verity: .*block")
    check_absent net-verity "verified root over HTTP: the tree found next to the URL, every block checked" forbid \
        "${NET_ROOT_CHECKS[@]}" "${NET_VERITY_SERVED[@]}"
    local sent
    sent=$(net_bytes "$ND" /KNOPPIX.verity)
    [ "$sent" -gt 0 ] || record net-verity-tree FAIL - "nginx never sent /KNOPPIX.verity"
}

scenario_net-verity-tampered() {
    local d=$VERITY_WORK/net-tampered
    verity_tampered_image "$d"
    net_verity_setup net-verity-tampered "$d/root.cloop" "$d/root.cloop.verity"
    net_boot net-verity-tampered "$ND" "httpfs=http://10.0.2.100/KNOPPIX cloopbox.verity=$TAMPERED_ROOT cloopbox.test=verity"
    net_teardown
    local forbid=("VERITY-BAD: read" "VERITY-GOOD: wrong" "boot failed")
    check_absent net-verity-tampered "one block tampered on the server: EIO for exactly that file, block and URL named" \
        forbid "VERITY-BAD: refused: .*Input/output error" "VERITY-GOOD: ok" \
        "http://10.0.2.100/KNOPPIX: verity: data block [0-9]+ \(bytes [0-9]+\.\.[0-9]+\) does not match" "CHECKS-DONE"
}

scenario_net-verity-refused() {
    verity_image
    local wrong=${VERITY_ROOT:0:63} until="cloopbox rescue|Kernel panic|CHECKS-DONE"
    if [ "${VERITY_ROOT:63}" = 0 ]; then wrong+=1; else wrong+=0; fi
    local forbid=("DAEMON: " "CHECKS-DONE" "served on /dev/nbd")
    # No tree on the server.
    net_verity_setup net-verity-refused "$VERITY_WORK/root.cloop" ""
    net_qemu "$APPEND_BASE no_timer_check httpfs=http://10.0.2.100/KNOPPIX cloopbox.verity=$VERITY_ROOT"
    boot net-verity-refused "$until" "${NET_QEMU[@]}"
    net_teardown
    check_absent net-verity-refused "no tree on the server: refused, naming the URL, rescue shell" forbid \
        "boot failed: http://10.0.2.100/KNOPPIX: refusing to boot an image that does not match cloopbox.verity=" \
        "no hash tree http://10.0.2.100/KNOPPIX.verity next to the image .*404" "dropping to the rescue shell"
    # The tree there, the root hash wrong.
    net_verity_setup net-verity-refused-hash "$VERITY_WORK/root.cloop" "$VERITY_WORK/root.cloop.verity"
    net_qemu "$APPEND_BASE no_timer_check httpfs=http://10.0.2.100/KNOPPIX cloopbox.verity=$wrong"
    boot net-verity-refused-hash "$until" "${NET_QEMU[@]}"
    net_teardown
    check_absent net-verity-refused-hash "wrong root hash over HTTP: refused, naming the URL, rescue shell" forbid \
        "boot failed: http://10.0.2.100/KNOPPIX: refusing to boot an image that does not match cloopbox.verity=" \
        "http://10.0.2.100/KNOPPIX.verity .*hash block 0 of level [0-9]+ .*does not match the root hash" \
        "dropping to the rescue shell"
}

scenario_net-verity-fetch() {
    verity_image
    # Not called KNOPPIX: the bare root hash is the network root's anyway.
    net_verity_setup net-verity-fetch "$VERITY_WORK/root.cloop" "$VERITY_WORK/root.cloop.verity" vroot.cloop
    net_boot net-verity-fetch "$ND" \
        "fetch=http://10.0.2.100/vroot.cloop ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off cloopbox.verity=$VERITY_ROOT cloopbox.test=net-fetch"
    net_teardown
    local forbid=("${NET_ABSENT[@]}" "boot failed" "verity: .*block" "booting lazily")
    check_absent net-verity-fetch "fetch= of a verified image: the tree comes along, the copy is verified" forbid \
        "fetch: [0-9]+ MiB copied in" "FETCH-FILE: vroot.cloop[[:space:]]*$" "FETCH-FILE: vroot.cloop.verity" \
        "/run/initramfs/toram/vroot.cloop: hash tree /run/initramfs/toram/vroot.cloop.verity matches root hash ${VERITY_ROOT:0:16}" \
        "DAEMON: [0-9]+ @cloopd .*--root-hash $VERITY_ROOT" "CTL: +verity checked: +[1-9][0-9]*\b" \
        "CTL: +verity refused: +0\b" "CHECKS-DONE"
}

scenario_net-cow() {
    net_setup net-cow
    local disk=$ND/persist.img append=("httpfs=http://10.0.2.100/root.cloop" "cow=LABEL=NETCOW:/live/knoppix.cow")
    part_disk "$disk" ext4 NETCOW 64
    # shellcheck disable=SC2054 # commas inside QEMU's arguments
    local drive=(-drive if=virtio,format=raw,file="$disk")
    local shut="cloopbox-shutdown: clean shutdown, poweroff, 1 server flushed and detached"
    local persist=/run/initramfs/persist/live/knoppix.cow
    net_qemu "$APPEND_BASE no_timer_check ${append[*]} cloopbox.test=net-cow"
    boot net-cow-1 "$SHUTDOWN_UNTIL" "${NET_QEMU[@]}" "${drive[@]}"
    check_absent net-cow-1 "httpfs= root, cowfile on a local disk by LABEL=: created, written, clean exitrd poweroff" \
        NET_ABSENT "DHCP on eth0: lease of 10.0.2.15/24" "persistence: /live/knoppix.cow on /dev/vda1" \
        "persistence: creating $persist" \
        "http://10.0.2.100/root.cloop served on /dev/nbd[0-9]+ by pid [0-9]+ with the persistent cowfile $persist" \
        "ROOTFS: /dev/nbd[0-9]+ ext4" "DAEMON: [0-9]+ @cloopd http://10.0.2.100/root.cloop" \
        "NETCOW-1: written [0-9a-f-]{36}" "cloopbox-shutdown: /dev/nbd[0-9]+ \\(pid [0-9]+\\): /dev/nbd[0-9]+ detached, cowfile flushed" \
        "$shut"
    local id1
    id1=$(tr -d '\r' < "$LOGS/net-cow-1.log" | sed -n 's/^NETCOW-1: written \([0-9a-f-]*\)$/\1/p' | sed -n 1p)
    boot net-cow-2 "$SHUTDOWN_UNTIL" "${NET_QEMU[@]}" "${drive[@]}"
    check_absent net-cow-2 "the next boot from the server finds boot one's file in the cowfile" NET_ABSENT \
        "persistence: using $persist" "with the persistent cowfile $persist" \
        "NETCOW-2: found ${id1:-NO-BOOT-ID}, this boot [0-9a-f-]{36}" "$shut"
    # The host's view: the cowfile on the disk, closed cleanly.
    local hostlog=$LOGS/net-cow-host.log dir=$ND/host state
    mkdir -p "$dir"
    state=$(persist_cow_state "$disk" "$dir")
    { echo "HOST: the cowfile is ${state:-unreadable}"
      "$CLOOPBOX_BIN" cowlist "$dir/knoppix.cow" 2>&1 | sed 's/^/HOST-COWLIST: /'; } > "$hostlog"
    check net-cow-host "host: the cowfile on the disk is clean after two network boots" \
        "HOST: the cowfile is clean" "HOST-COWLIST: +state cowfile: +clean"
    # An overlayfs root: an iso9660 image on the server, the upper
    # directory on the disk (guest/persist-overlay.sh).
    local root=$ND/rootfs-iso
    make_rootfs "$root"
    cloop_of iso9660 "$root" "$ND/www/root-iso.cloop"
    rm -rf "$root"
    part_disk "$disk" ext4 NETCOW 64
    net_qemu "$APPEND_BASE no_timer_check httpfs=http://10.0.2.100/root-iso.cloop cow=LABEL=NETCOW:/live/overlay cloopbox.test=persist-overlay"
    boot net-cow-overlay-1 "$SHUTDOWN_UNTIL" "${NET_QEMU[@]}" "${drive[@]}"
    check_absent net-cow-overlay-1 "httpfs= iso9660 image, overlay upper on the local disk: written, clean poweroff" NET_ABSENT \
        "persistence: overlay upper directory /run/initramfs/persist/live/overlay/upper" "ROOTFS: overlay overlay" \
        "DAEMON: [0-9]+ @cloopd http://10.0.2.100/root-iso.cloop" "OVERLAY-PERSIST-1: written" "$shut"
    boot net-cow-overlay-2 "$SHUTDOWN_UNTIL" "${NET_QEMU[@]}" "${drive[@]}"
    check_absent net-cow-overlay-2 "the next network boot finds the file in the upper directory" NET_ABSENT \
        "OVERLAY-PERSIST-2: found kept in the upper directory" "$shut"
    net_teardown
}
