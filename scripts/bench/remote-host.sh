#!/usr/bin/env bash
# A remote host against the in-process one, side by side in one run: one
# `pinacle up` (its own agent: host `local`) and one `pinacle agent` joined
# to it as host `far` (a separate process with its own data directory, in a
# network namespace of its own joined to the server's by a veth, as another
# machine on the LAN: reached only over its link), one youki pod on each
# (the same image and tier), and the same figures for both:
#   exec round trip      POST /api/v1/pods/P/exec `true` (p50, p99)
#   keystroke echo       one byte through the terminal WebSocket and back
#   proxy                wrk through the Pinacle proxy to nginx in the pod
#                        (req/s and p99, 1 and 16 connections)
#   scp                  BENCH_MB MiB up and down through the SSH gateway
# and, as the floor, the runtime directly: `pinacle-youki exec` of `true`
# and wrk straight to the pod's address. Goal (issue 17): remote costs at
# most 1.2x in-process for throughput and at most 1 ms more at p50.
#
# Run as root after scripts/test.sh built the test images:
#   bash scripts/bench/remote-host.sh      (BENCH_N=200 BENCH_MB=256 BENCH_DURATION=10s)
# Talks only to 127.0.0.1, the namespace and the pods this script creates.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${BENCH_N:-200}
MB=${BENCH_MB:-256}
DURATION=${BENCH_DURATION:-10s}
for pkg in nginx wrk; do
    command -v "$pkg" >/dev/null || { echo "installing $pkg (apt-get)"; apt-get install -y "$pkg" >/dev/null; }
done
cargo build --release -p pinacle -p pinacle-youki 2>/dev/null || cargo build --release --workspace
bash scripts/build-supervisor.sh >/dev/null
BIN=$PWD/target/release/pinacle
YOUKI=$PWD/target/release/pinacle-youki
TMP=$(mktemp -d /var/tmp/pinacle-bench-remote.XXXXXX)
TOKEN=pnc_bench-remote-token-0123456789
PID= AGENT=
cleanup() {
    # pods first, while both hosts can still carry out their deletion
    if [[ -n $PID ]]; then
        for pod in near far; do
            PINACLE_API=$API PINACLE_TOKEN=$TOKEN PINACLE_CONFIG=$TMP/cli.json timeout 60 "$BIN" pod delete $pod --wait >/dev/null 2>&1 || true
        done
    fi
    [[ -n $AGENT ]] && { kill "$AGENT" 2>/dev/null || true; wait "$AGENT" 2>/dev/null || true; }
    [[ -n $PID ]] && { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
    for br in pncbench5 pncbench6; do ip link del $br 2>/dev/null || true; nft delete table inet "pinacle_$br" 2>/dev/null || true; done
    ip link del pnbrh0 2>/dev/null || true; ip link del pnbfa 2>/dev/null || true; ip netns del pnbfar 2>/dev/null || true
    for state in "$TMP"/data/runtime/youki "$TMP"/far/runtime/youki; do
        [[ -d $state ]] && for id in $("$YOUKI" --root "$state" list 2>/dev/null | awk 'NR>1 {print $1}'); do "$YOUKI" --root "$state" delete --force "$id" >/dev/null 2>&1 || true; done
    done
    rm -rf --one-file-system "$TMP"
}
trap cleanup EXIT
# youki pods' root group must pass through the directories above their data
chgrp 1000000000 "$TMP" && chmod 710 "$TMP"
mkdir -p "$TMP/data" "$TMP/far"
ln -s /var/tmp/pinacle-test/images "$TMP/data/images"
ln -s /var/tmp/pinacle-test/images "$TMP/far/images"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PPORT=$(port) GPORT=$(port)
# the other machine: namespace pnbfar at 10.253.0.2, the server at 10.253.0.1
ip link del pnbrh0 2>/dev/null || true; ip netns del pnbfar 2>/dev/null || true
ip link add pnbrh0 type bridge && ip addr add 10.253.0.1/24 dev pnbrh0 && ip link set pnbrh0 up
ip netns add pnbfar && ip link add pnbfa type veth peer name pnbfb && ip link set pnbfb netns pnbfar
ip link set pnbfa master pnbrh0 up && ip -n pnbfar addr add 10.253.0.2/24 dev pnbfb && ip -n pnbfar link set pnbfb up && ip -n pnbfar link set lo up
PINACLE_ADMIN_TOKEN=$TOKEN PINACLE_CONFIG=$TMP/cli.json PINACLE_KEYRING=off "$BIN" up --data-dir "$TMP/data" --listen 10.253.0.1:0 \
    --rate-limit 0 --pod-network bridge --pod-bridge pncbench5 --pod-subnet 10.231.30.0/24 --proxy-listen 127.0.0.1:$PPORT \
    --ssh-listen 127.0.0.1:$GPORT --ssh-host 127.0.0.1 --heartbeat-interval 1 >"$TMP/out" 2>"$TMP/log" &
PID=$!
API=
for _ in $(seq 300); do API=$(sed -n 's/^Pinacle API listening on //p' "$TMP/out"); [[ -n $API ]] && break; sleep 0.1; done
[[ -n $API ]] || { cat "$TMP/log"; exit 1; }
export PINACLE_API=$API PINACLE_TOKEN=$TOKEN PINACLE_CONFIG=$TMP/cli.json PINACLE_KEYRING=off
"$BIN" admin settings --youki-everyone true >/dev/null   # youki pods are refused by default
"$BIN" pod create near --template blank --runtime youki --wait >/dev/null
JOIN=$("$BIN" host add far 2>/dev/null)
nsenter --net=/run/netns/pnbfar "$BIN" agent --server "$API" --join-token "$JOIN" --data-dir "$TMP/far" --pod-network bridge --pod-bridge pncbench6 \
    --pod-subnet 10.231.31.0/24 >"$TMP/far.out" 2>"$TMP/far.log" &
AGENT=$!
for _ in $(seq 300); do "$BIN" host list | grep -q '^far .*ready' && break; sleep 0.2; done
"$BIN" host cordon local >/dev/null
"$BIN" pod create far --template blank --runtime youki --wait >/dev/null
"$BIN" host uncordon local >/dev/null
[[ $("$BIN" pod show far --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["host"])') == far ]] || { echo "pod far is not on host far"; exit 1; }

# nginx (Debian's binary) serving 1 KiB in each pod
for pod in near far; do
    curl -sf -X PUT -H "Authorization: Bearer $TOKEN" --data-binary @/usr/sbin/nginx "$API/api/v1/pods/$pod/files/content?path=/workspace/nginx"
    "$BIN" pod exec $pod -- chmod 755 /workspace/nginx
    "$BIN" pod exec $pod --stdin -- sh -c 'cat > /workspace/up.conf' <<'UPSTREAM'
user root; worker_processes 1; pid /tmp/up.pid; error_log /tmp/up.err;
events { worker_connections 4096; }
http {
    access_log off; keepalive_requests 1000000;
    client_body_temp_path /tmp/cb; proxy_temp_path /tmp/pt; fastcgi_temp_path /tmp/ft; uwsgi_temp_path /tmp/ut; scgi_temp_path /tmp/st;
    server { listen 8080; root /workspace/www; }
}
UPSTREAM
    "$BIN" pod exec $pod -- sh -c 'mkdir -p /workspace/www && head -c 1024 /dev/zero | tr "\0" x > /workspace/www/index.html && /workspace/nginx -c /workspace/up.conf -p /tmp'
done
ip_of() { # data-dir pod
    local id
    id=$("$BIN" pod show "$2" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"].replace("-",""))')
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ip"])' "$1/pods/$id/network.json"
}
NEAR_IP=$(ip_of "$TMP/data" near)
for _ in $(seq 50); do curl -sf "http://$NEAR_IP:8080/index.html" >/dev/null && break; sleep 0.1; done

echo "== round trips through the API ($N each)"
cargo bench -q -p pinacle --bench host_rtt -- "$API" "$TOKEN" "$N" "in-process host=near" "remote host=far"
# the floor: the runtime's own exec, no API
sandbox() { "$BIN" pod show "$1" --json | python3 -c 'import json,sys; print("pinacle-"+json.load(sys.stdin)["id"].replace("-",""))'; }
SB=$(sandbox near)
python3 - "$YOUKI" "$TMP/data/runtime/youki" "$SB" "$N" <<'PY'
import subprocess, sys, time
youki, root, sb, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t = []
for i in range(min(n, 50)):
    s = time.perf_counter(); subprocess.run([youki, "--root", root, "exec", sb, "--", "true"], check=True, stdout=subprocess.DEVNULL); t.append((time.perf_counter() - s) * 1000)
t.sort()
print(f"{'exec true':<16} {'runtime directly':<22} {len(t):>6} {t[len(t)//2]:>9.3f} {t[min(len(t)-1, int(len(t)*0.99))]:>9.3f} {sum(t)/len(t):>9.3f}")
PY

echo
echo "== proxy: GET /index.html (1 KiB) from nginx in the pod, wrk $DURATION per row"
printf '%-28s %6s %10s %9s %9s\n' upstream conns req/s p50_ms p99_ms
wrk_row() { # label url conns [host]
    local out threads=$(( $3 > 1 ? 2 : 1 ))
    out=$(wrk -t$threads -c"$3" -d"$DURATION" --latency ${4:+-H "Host: $4"} -H "Authorization: Bearer $TOKEN" "$2")
    awk -v label="$1" -v conns="$3" '
        function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /m$/) return v*60000; return v*1000 }
        /^Requests\/sec:/ { rps = $2 }  $1 == "50%" { p50 = ms($2) }  $1 == "99%" { p99 = ms($2) }
        END { printf "%-28s %6s %10s %9.2f %9.2f\n", label, conns, rps, p50, p99 }' <<<"$out"
}
for c in 1 16; do
    wrk_row "direct to the pod (floor)" "http://$NEAR_IP:8080/index.html" $c
    wrk_row "proxy, in-process host" "http://127.0.0.1:$PPORT/index.html" $c 8080-near-admin.pinacle.localhost
    wrk_row "proxy, remote host" "http://127.0.0.1:$PPORT/index.html" $c 8080-far-admin.pinacle.localhost
done

echo
echo "== scp $MB MiB through the SSH gateway (up, then down)"
ssh-keygen -q -t ed25519 -N "" -f "$TMP/id" -C bench
"$BIN" ssh-key add "$TMP/id.pub" --name bench >/dev/null
HOST_CA=$(curl -sf -H "Authorization: Bearer $TOKEN" "$API/api/v1/ssh" | python3 -c 'import json,sys; print(json.load(sys.stdin)["host_ca"])')
echo "@cert-authority [127.0.0.1]:$GPORT $HOST_CA" >"$TMP/known_hosts"
SSHO=(-F /dev/null -i "$TMP/id" -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile="$TMP/known_hosts" -o StrictHostKeyChecking=yes)
head -c $((MB << 20)) /dev/urandom >"$TMP/blob"
printf '%-28s %10s %10s\n' pod up_MiB/s down_MiB/s
for pod in near far; do
    label=$([[ $pod == near ]] && echo "in-process host" || echo "remote host")
    s=$(date +%s.%N); scp -q "${SSHO[@]}" -P "$GPORT" "$TMP/blob" "$pod@127.0.0.1:blob"; e=$(date +%s.%N)
    up=$(python3 -c "print(f'{$MB/($e-$s):.1f}')")
    s=$(date +%s.%N); scp -q "${SSHO[@]}" -P "$GPORT" "$pod@127.0.0.1:/workspace/blob" "$TMP/back"; e=$(date +%s.%N)
    down=$(python3 -c "print(f'{$MB/($e-$s):.1f}')")
    cmp -s "$TMP/blob" "$TMP/back" || { echo "scp changed the file ($pod)"; exit 1; }
    printf '%-28s %10s %10s\n' "$label" "$up" "$down"
done
echo
echo "$(nproc) CPUs shared by the server, the agent, the pods and the load generators."
