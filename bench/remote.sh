#!/bin/sh
# Remote images over HTTP on loopback (docs/remote.md): a private nginx on
# 127.0.0.1 serves a cloop image; we time extract_compressed_fs of the
# local file against the same image by URL, and count the requests and
# bytes nginx sent (its access log) for the extract and for cloopinfo
# (header and index only).
#
# Usage: bench/remote.sh [SIZE_MIB] [RUNS]     (defaults 64 and 5)
# Needs: nginx, hyperfine, a release build (cargo build --release).
set -eu
size=${1:-64}
runs=${2:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release/cloopbox
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
nginx=$(command -v nginx || echo /usr/sbin/nginx)
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT INT TERM
mkdir -p "$dir/www" "$dir/tmp"

# Compressible, file-like input: the start of a tar of /usr.
tar -cf - /usr/lib /usr/share 2>/dev/null | head -c $((size * 1048576)) > "$dir/raw" || true
"$bin" create_compressed_fs -q -B 65536 "$dir/raw" "$dir/www/img.cloop"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$dir/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 64; }
http {
    log_format t '\$status \$body_bytes_sent "\$http_range" \$connection';
    access_log $dir/access.log t;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    default_type application/octet-stream;
    server { listen 127.0.0.1:$port; root $dir/www; }
}
EOF
"$nginx" -p "$dir" -c "$dir/nginx.conf" & pid=$!
sleep 1
url=http://127.0.0.1:$port/img.cloop
image=$(stat -c %s "$dir/www/img.cloop")
echo "image: $size MiB raw, $image bytes compressed; load: $(cut -d' ' -f1-3 /proc/loadavg)"

count() {  # requests bytes connections of the access log, then clear it
    awk '{n++; b+=$2; c[$4]=1} END {printf "%d requests, %d bytes, %d connections\n", n, b, length(c)}' "$dir/access.log"
    : > "$dir/access.log"
}
: > "$dir/access.log"
"$bin" cloopinfo "$url" > /dev/null
echo "cloopinfo URL: $(count)"
"$bin" extract_compressed_fs -q -t 1 "$url" "$dir/out"
cmp "$dir/out" "$dir/raw" 2>/dev/null || cmp -n "$(stat -c %s "$dir/raw")" "$dir/out" "$dir/raw"
echo "extract -t 1 URL: $(count)"
"$bin" extract_compressed_fs -q "$url" "$dir/out"
echo "extract (one thread per CPU) URL: $(count)"
hyperfine -N --style none --runs "$runs" --export-json "$dir/times.json" \
    -n local "$bin extract_compressed_fs -q -t 1 $dir/www/img.cloop $dir/out" \
    -n http "$bin extract_compressed_fs -q -t 1 $url $dir/out" > /dev/null
python3 - "$dir/times.json" <<'EOF2'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
for name in ("local", "http"):
    print(f"extract {name}: median {r[name]['median']:.3f} s over {len(r[name]['times'])} runs")
print(f"ratio http/local: {r['http']['median'] / r['local']['median']:.2f}")
EOF2
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
