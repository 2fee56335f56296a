#!/usr/bin/env bash
# Proxy benchmark: wrk against the same upstream (Debian's nginx binary
# serving a 1 KiB file with keep-alive inside a real youki pod) three ways in
# one run: directly on the pod's address (baseline), through nginx (Debian)
# as a reverse proxy with upstream keep-alive, and through the Pinacle proxy
# (which also authenticates every request with a bearer token, checks the
# policy and pools its connections to the pod). Keep-alive on the client
# side, 1 and 64 connections. Goal: at least nginx's throughput and no worse
# p99. Then WebSocket round-trip latency (cli/benches/ws_rtt.rs) to an echo
# server in the same pod (scripts/bench/stream_server.py), the same three ways.
#
# Run as root after scripts/test.sh built the test images:
#   bash scripts/bench/proxy.sh        (BENCH_DURATION, default 10s)
# Talks only to 127.0.0.1 and the pod this script creates.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${BENCH_DURATION:-10s}
for pkg in nginx wrk; do
    command -v "$pkg" >/dev/null || { echo "installing $pkg (apt-get)"; apt-get install -y "$pkg" >/dev/null; }
done
cargo build --release -p pinacle -p pinacle-youki 2>/dev/null || cargo build --release --workspace
bash scripts/build-supervisor.sh >/dev/null
BIN=$PWD/target/release/pinacle
TMP=$(mktemp -d /var/tmp/pinacle-bench-proxy.XXXXXX)
BRIDGE=pncbench0 SUBNET=10.231.9.0/24
TOKEN=pnc_bench-proxy-token-0123456789
PID= NGINX_PID=
cleanup() {
    [[ -n $NGINX_PID ]] && kill "$NGINX_PID" 2>/dev/null || true
    if [[ -n $PID ]]; then
        PINACLE_API=$API PINACLE_TOKEN=$TOKEN "$BIN" pod delete bench --wait >/dev/null 2>&1 || true
        kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true
    fi
    ip link del "$BRIDGE" 2>/dev/null || true
    nft delete table inet "pinacle_$BRIDGE" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$TMP/data"
ln -s /var/tmp/pinacle-test/images "$TMP/data/images"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PPORT=$(port) NPORT=$(port)
PINACLE_ADMIN_TOKEN=$TOKEN PINACLE_CONFIG=$TMP/cli.json "$BIN" up --data-dir "$TMP/data" --listen 127.0.0.1:0 \
    --rate-limit 0 --pod-network bridge --pod-bridge $BRIDGE --pod-subnet $SUBNET --proxy-listen 127.0.0.1:$PPORT --ssh-listen none \
    >"$TMP/out" 2>"$TMP/log" &
PID=$!
API=
for _ in $(seq 300); do API=$(sed -n 's/^Pinacle API listening on //p' "$TMP/out"); [[ -n $API ]] && break; sleep 0.1; done
[[ -n $API ]] || { cat "$TMP/log"; exit 1; }
export PINACLE_API=$API PINACLE_TOKEN=$TOKEN
"$BIN" admin settings --youki-everyone true >/dev/null   # youki pods are refused by default
"$BIN" pod create bench --template blank --runtime youki --wait >/dev/null
# the upstream: Debian's nginx binary (its libraries are in the base image)
curl -sf -X PUT -H "Authorization: Bearer $TOKEN" --data-binary @/usr/sbin/nginx "$API/api/v1/pods/bench/files/content?path=/workspace/nginx"
"$BIN" pod exec bench -- chmod 755 /workspace/nginx
"$BIN" pod exec bench --stdin -- sh -c 'cat > /workspace/up.conf' <<'UPSTREAM'
user root; worker_processes 1; pid /tmp/up.pid; error_log /tmp/up.err;
events { worker_connections 4096; }
http {
    access_log off; keepalive_requests 1000000;
    client_body_temp_path /tmp/cb; proxy_temp_path /tmp/pt; fastcgi_temp_path /tmp/ft; uwsgi_temp_path /tmp/ut; scgi_temp_path /tmp/st;
    server { listen 8080; root /workspace/www; }
}
UPSTREAM
"$BIN" pod exec bench -- sh -c 'mkdir -p /workspace/www && head -c 1024 /dev/zero | tr "\0" x > /workspace/www/index.html && /workspace/nginx -c /workspace/up.conf -p /tmp'
ID=$("$BIN" pod show bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"].replace("-",""))')
IP=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ip"])' "$TMP/data/pods/$ID/network.json")
for _ in $(seq 50); do curl -sf "http://$IP:8080/index.html" >/dev/null && break; sleep 0.1; done
"$BIN" pod exec bench --stdin -- sh -c 'cat > /workspace/srv.py' < scripts/bench/stream_server.py
"$BIN" pod exec bench -- sh -c 'setsid python3 /workspace/srv.py >/dev/null 2>&1 </dev/null &'
WSIP=$IP
WPORT=$(port)

cat >"$TMP/nginx.conf" <<NGINX
worker_processes 2;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err;
events { worker_connections 1024; }
http {
    access_log off;
    upstream pod { server $IP:8080; keepalive 64; }
    server {
        listen 127.0.0.1:$NPORT;
        location / {
            proxy_pass http://pod;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
        }
    }
    server {
        listen 127.0.0.1:$WPORT;
        location / {
            proxy_pass http://$WSIP:9000;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
        }
    }
}
NGINX
nginx -c "$TMP/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
sleep 0.5

HOST=8080-bench-admin.pinacle.localhost
ROWS=()
run() { # label url conns [header]
    local out threads=$(( $3 > 1 ? 2 : 1 ))
    echo "wrk: $1, $3 connection(s), $DURATION..."
    out=$(wrk -t$threads -c"$3" -d"$DURATION" --latency ${4:+-H "$4"} ${5:+-H "$5"} "$2")
    ROWS+=("$1|$3|$(awk '
        function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /m$/) return v*60000; return v*1000 }
        /^Requests\/sec:/ { rps = $2 }  $1 == "50%" { p50 = ms($2) }  $1 == "99%" { p99 = ms($2) }
        /Non-2xx/ { bad = $NF }
        END { printf "%s|%.2f|%.2f|%d", rps, p50, p99, bad }' <<<"$out")")
}
for c in 1 64; do
    run "direct (baseline)" "http://$IP:8080/index.html" $c
    run "nginx" "http://127.0.0.1:$NPORT/index.html" $c
    if [[ -n ${BENCH_PERF:-} && $c == 64 ]]; then
        # BENCH_PERF=FILE: a CPU profile of Pinacle during this run
        perf record -F 999 -g -p "$PID" -o "$TMP/perf.data" 2>/dev/null &
        PERF_PID=$!
    fi
    run "pinacle proxy" "http://127.0.0.1:$PPORT/index.html" $c "Host: $HOST" "Authorization: Bearer $TOKEN"
    if [[ -n ${PERF_PID:-} ]]; then
        kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null || true; PERF_PID=
        { perf report -i "$TMP/perf.data" --no-children --stdio --percent-limit 0.7 -g none --sort dso,sym
          echo; echo "# cumulative, Pinacle's own code"
          perf report -i "$TMP/perf.data" --children --stdio --percent-limit 1 -g none --dsos pinacle --sort sym; } 2>/dev/null >"$BENCH_PERF" || true
    fi
done
echo
echo "GET /index.html (1 KiB) from nginx in a youki pod; wrk $DURATION per row, $(nproc) CPUs shared with wrk, the proxies and the upstream"
printf '%-18s %6s %10s %9s %9s %7s\n' upstream conns req/s p50_ms p99_ms non2xx
for row in "${ROWS[@]}"; do
    IFS='|' read -r label conns rps p50 p99 bad <<<"$row"
    printf '%-18s %6s %10s %9s %9s %7s\n' "$label" "$conns" "$rps" "$p50" "$p99" "$bad"
done

echo
cargo bench -q -p pinacle --bench ws_rtt -- "${BENCH_WS_FRAMES:-2000}" \
    "direct=ws://$WSIP:9000/ws" \
    "nginx=ws://127.0.0.1:$WPORT/ws" \
    "pinacle proxy=ws://127.0.0.1:$PPORT/ws|9000-bench-admin.pinacle.localhost|$TOKEN"
