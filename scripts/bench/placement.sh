#!/usr/bin/env bash
# Placement throughput (issue 17): BENCH_PODS pods (default 300) requested at
# once from one API server (`pinacle server`, no host of its own) and placed
# across three `pinacle agent` processes, each in a network namespace of its
# own (another machine on the LAN, reached only over its link). Prints how
# long the requests took (p50/p99 of POST /api/v1/pods with BENCH_CLIENTS
# requests in flight), the time until every pod runs, a progress line per
# second, and per host: pods placed, vCPUs and memory reserved against what
# placement may promise (capacity x overcommit). Host `h3` offers fewer vCPUs
# than the others, so that the three together hold 304 dev.small pods: the
# run shows that no host is filled past its capacity.
# As the reference in the same run, one pod created and started alone
# (`pod create --wait`) on the same hosts.
#
# Run as root after scripts/test.sh built the test images:
#   bash scripts/bench/placement.sh     (BENCH_PODS=300 BENCH_CLIENTS=32 BENCH_TIMEOUT=900)
# Talks only to the namespaces and pods this script creates.
set -euo pipefail
cd "$(dirname "$0")/../.."
PODS=${BENCH_PODS:-300}
CLIENTS=${BENCH_CLIENTS:-32}
LIMIT=${BENCH_TIMEOUT:-900}
[[ -d /var/tmp/pinacle-test/images ]] || { echo "run scripts/test.sh first: it builds the test images" >&2; exit 1; }
cargo build --release -p pinacle -p pinacle-youki 2>/dev/null || cargo build --release --workspace
bash scripts/build-supervisor.sh >/dev/null
BIN=$PWD/target/release/pinacle
YOUKI=$PWD/target/release/pinacle-youki
TMP=$(mktemp -d /var/tmp/pinacle-bench-place.XXXXXX)
TOKEN=pnc_bench-place-token-0123456789
PID= AGENTS=()
cleanup() {
    set +e
    if [[ -n $PID ]]; then
        echo "deleting the pods..."
        python3 - "$API" "$TOKEN" <<'PY'
import json, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
api, token = sys.argv[1], sys.argv[2]
def call(method, path):
    req = urllib.request.Request(api + path, method=method, headers={"authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")
try:
    pods = [p["name"] for p in call("GET", "/api/v1/pods")["pods"]]
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda n: call("DELETE", "/api/v1/pods/" + n), pods))
    end = time.time() + 600
    while time.time() < end and call("GET", "/api/v1/pods")["pods"]:
        time.sleep(1)
except Exception as e:  # the forced clean-up below still runs
    print("deleting pods:", e)
PY
    fi
    for a in "${AGENTS[@]}"; do kill "$a" 2>/dev/null; wait "$a" 2>/dev/null; done
    [[ -n $PID ]] && { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }
    for i in 1 2 3; do
        state=$TMP/h$i/runtime/youki
        [[ -d $state ]] && for id in $("$YOUKI" --root "$state" list 2>/dev/null | awk 'NR>1 {print $1}'); do "$YOUKI" --root "$state" delete --force "$id" >/dev/null 2>&1; done
        ip netns del "pnbpl$i" 2>/dev/null
    done
    awk -v d="$TMP" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
    ip link del pnbpl0 2>/dev/null
    rm -rf --one-file-system "$TMP"
}
trap cleanup EXIT
chgrp 1000000000 "$TMP" && chmod 710 "$TMP"
mkdir -p "$TMP/data"

# the LAN: bridge pnbpl0 at 10.254.7.1 (the server), namespace pnbplI at 10.254.7.(1+I)
ip link del pnbpl0 2>/dev/null || true
ip link add pnbpl0 type bridge && ip addr add 10.254.7.1/24 dev pnbpl0 && ip link set pnbpl0 up
for i in 1 2 3; do
    ip netns del "pnbpl$i" 2>/dev/null || true
    ip netns add "pnbpl$i" && ip link add "pnbpl${i}a" type veth peer name "pnbpl${i}b" && ip link set "pnbpl${i}b" netns "pnbpl$i"
    ip link set "pnbpl${i}a" master pnbpl0 up && ip -n "pnbpl$i" addr add "10.254.7.$((1 + i))/24" dev "pnbpl${i}b"
    ip -n "pnbpl$i" link set "pnbpl${i}b" up && ip -n "pnbpl$i" link set lo up
done
PINACLE_ADMIN_TOKEN=$TOKEN PINACLE_CONFIG=$TMP/cli.json PINACLE_KEYRING=off "$BIN" server --data-dir "$TMP/data" \
    --listen 10.254.7.1:0 --proxy-listen none --ssh-listen none --rate-limit 0 --heartbeat-interval 1 >"$TMP/out" 2>"$TMP/log" &
PID=$!
API=
for _ in $(seq 300); do API=$(sed -n 's/^Pinacle API listening on //p' "$TMP/out"); [[ -n $API ]] && break; sleep 0.1; done
[[ -n $API ]] || { cat "$TMP/log"; exit 1; }
export PINACLE_API=$API PINACLE_TOKEN=$TOKEN PINACLE_CONFIG=$TMP/cli.json PINACLE_KEYRING=off
"$BIN" admin settings --youki-everyone true >/dev/null   # youki pods are refused by default
curl -sf -X PATCH "$API/api/v1/admin/settings" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "{\"quotas\":{\"user_pods\":$((PODS + 10)),\"user_vcpus\":$((PODS + 10)),\"team_pods\":50,\"team_vcpus\":32}}" >/dev/null

# h1, h2: 7 vCPUs (x16: 112 dev.small pods); h3: 5 (80); 64 GiB each (x4: 128)
for i in 1 2 3; do
    vcpus=$([[ $i == 3 ]] && echo 5 || echo 7)
    mkdir -p "$TMP/h$i" && ln -s /var/tmp/pinacle-test/images "$TMP/h$i/images"
    JOIN=$("$BIN" host add "h$i" 2>/dev/null)
    nsenter --net="/run/netns/pnbpl$i" "$BIN" agent --server "$API" --join-token "$JOIN" --data-dir "$TMP/h$i" \
        --label "zone=z$i" --vcpus "$vcpus" --memory-gib 64 --disk-overcommit 1000 \
        --pod-network bridge --pod-bridge "pncpl$i" --pod-subnet "10.232.$((4 * i)).0/22" >"$TMP/h$i.out" 2>"$TMP/h$i.log" &
    AGENTS+=($!)
done
for _ in $(seq 300); do [[ $("$BIN" host list | grep -c ' ready') -ge 3 ]] && break; sleep 0.2; done
"$BIN" host list

echo "== the reference: one pod alone (create --wait)"
s=$(date +%s.%N); "$BIN" pod create alone --template blank --runtime youki --wait >/dev/null; e=$(date +%s.%N)
ALONE=$(python3 -c "print(f'{$e-$s:.2f}')")
"$BIN" pod delete alone --wait >/dev/null
echo "one pod: $ALONE s from request to running"

echo "== $PODS pods requested at once ($CLIENTS in flight)"
python3 - "$API" "$TOKEN" "$PODS" "$CLIENTS" "$LIMIT" "$ALONE" <<'PY'
import json, sys, time, urllib.request, urllib.error
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
api, token, n, clients, limit, alone = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
H = {"authorization": "Bearer " + token, "content-type": "application/json"}
def call(method, path, body=None):
    req = urllib.request.Request(api + path, method=method, headers=H, data=json.dumps(body).encode() if body else None)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
def create(i):
    s = time.perf_counter()
    status, body = call("POST", "/api/v1/pods", {"name": f"p{i:03d}", "template": "blank", "runtime": "youki", "tier": "dev.small"})
    return status, body, (time.perf_counter() - s) * 1000
start = time.perf_counter()
with ThreadPoolExecutor(clients) as ex:
    results = list(ex.map(create, range(n)))
requested = time.perf_counter() - start
codes = Counter(r[0] for r in results)
lat = sorted(r[2] for r in results)
print(f"requests: {requested:.2f} s for {n} ({n/requested:.0f}/s); status {dict(codes)}; "
      f"POST p50 {lat[len(lat)//2]:.0f} ms, p99 {lat[min(len(lat)-1, int(len(lat)*0.99))]:.0f} ms")
refused = [r[1] for r in results if r[0] >= 300]
if refused:
    print("first refusal:", json.dumps(refused[0]))
wanted = sum(1 for r in results if r[0] < 300)
running = 0
while True:
    _, body = call("GET", "/api/v1/pods")
    states = Counter(p["state"] for p in body["pods"])
    running = states.get("running", 0)
    t = time.perf_counter() - start
    print(f"  {t:6.1f} s  {dict(sorted(states.items()))}", flush=True)
    if running >= wanted or states.get("error", 0) + running >= wanted or t > limit:
        break
    time.sleep(1)
all_running = time.perf_counter() - start
pods = body["pods"]
by_host = Counter(p["host"] for p in pods)
_, hosts = call("GET", "/api/v1/admin/hosts")
hosts = hosts["hosts"] if isinstance(hosts, dict) else hosts
errors = [p for p in pods if p["state"] == "error"]
for p in errors[:3]:
    print("error:", p["name"], p.get("state_reason"))
print()
print(f"{n} dev.small youki pods requested at once, 3 agents in their own network namespaces")
print(f"{'':<26} {'pods':>5} {'vcpus':>12} {'memory_GiB':>14}  over")
over = 0
for h in sorted(hosts, key=lambda h: h["id"]):
    placed = by_host.get(h["id"], 0)
    cap_v, cap_m = h["vcpus"] * 16, (h["memory_bytes"] >> 30) * 4
    used_v, used_m = h["vcpus_used"], h["memory_used"] >> 30
    bad = used_v > cap_v or used_m > cap_m
    over += bad
    print(f"host {h['id']:<21} {placed:>5} {used_v:>5} of {cap_v:<4} {used_m:>6} of {cap_m:<5}  {'OVER' if bad else 'no'}")
print(f"{'time to all running':<26} {all_running:>8.1f} s   ({running} of {wanted} running, {len(errors)} error)")
print(f"{'pods running per second':<26} {running/all_running:>8.1f}")
print(f"{'reference: one pod alone':<26} {alone:>8.2f} s   (x{n} one after another: {alone*n:.0f} s)")
print(f"hosts over capacity: {over}")
sys.exit(1 if over or running < wanted else 0)
PY
echo "$(nproc) CPUs shared by the server, the three agents and the pods."
