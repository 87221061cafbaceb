#!/usr/bin/env bash
# The cost of TLS for remote images (docs/remote.md, "HTTPS"), on loopback:
# one private nginx serves the same cloop image over http:// and https://
# (a test CA made by openssl, P-256); we time extract_compressed_fs -t 1 of
# the whole image (throughput) and 50 runs of cloopinfo (probe, header and
# index: a new process and one handshake each) over both, as wall time
# and our process's user + system CPU time (GNU time).
#
# Usage: bench/tls.sh [BINARY] [SIZE_MIB] [RUNS]
#        (defaults scripts/build-static.sh's binary, 256, 5)
# Needs: nginx, openssl, GNU time (/usr/bin/time).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$("$root/scripts/build-static.sh")}
size=${2:-256}
runs=${3:-5}
d=$(mktemp -d)
trap 'kill "$ng" 2>/dev/null || true; rm -rf "$d"' EXIT INT TERM
mkdir -p "$d/www" "$d/tmp"
cd "$d"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=bench CA" -keyout ca.key -out ca.pem \
    -addext basicConstraints=critical,CA:TRUE 2> /dev/null
openssl req -new "${ec[@]}" -subj "/CN=127.0.0.1" -keyout s.key -out s.csr 2> /dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > ext
openssl x509 -req -in s.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext -out s.pem 2> /dev/null
# Random data: stored blocks, so the run measures the transport, not zlib.
head -c $((size << 20)) /dev/urandom > raw
"$bin" create_compressed_fs -q -B 65536 -L 1 raw www/img.cloop
rm raw
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
P=$(port) S=$(port)
cat > nginx.conf <<CONF
daemon off; master_process off; worker_processes 1; pid $d/nginx.pid; error_log $d/error.log;
events { worker_connections 64; }
http {
  access_log off; keepalive_requests 100000;
  client_body_temp_path $d/tmp/b; proxy_temp_path $d/tmp/p; fastcgi_temp_path $d/tmp/f;
  uwsgi_temp_path $d/tmp/u; scgi_temp_path $d/tmp/s;
  server { listen 127.0.0.1:$P; root $d/www; }
  server { listen 127.0.0.1:$S ssl; root $d/www; ssl_certificate $d/s.pem; ssl_certificate_key $d/s.key; }
}
CONF
nginx -p "$d" -c "$d/nginx.conf" &
ng=$!
sleep 1
echo "binary $bin ($(stat -c %s "$bin") bytes), image $(stat -c %s www/img.cloop) bytes, load $(cut -d' ' -f1-3 /proc/loadavg)"
# "wall user system" of one command, its output dropped.
t() { /usr/bin/time -f "%e %U %S" "$@" 2>&1 > /dev/null | tail -1; }
fifty() { for _ in $(seq 50); do "$@" > /dev/null; done; }
for _ in $(seq "$runs"); do
    echo "extract http  $(t "$bin" extract_compressed_fs -q -t 1 "http://127.0.0.1:$P/img.cloop" /dev/null)"
    echo "extract https $(t "$bin" extract_compressed_fs -q -t 1 --ca-file ca.pem "https://127.0.0.1:$S/img.cloop" /dev/null)"
done
export -f fifty
for _ in $(seq "$runs"); do
    echo "50x info http  $(t bash -c "fifty $bin cloopinfo http://127.0.0.1:$P/img.cloop")"
    echo "50x info https $(t bash -c "fifty $bin cloopinfo --ca-file ca.pem https://127.0.0.1:$S/img.cloop")"
done
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
