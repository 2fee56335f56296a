#!/usr/bin/env bash
# Clone benchmark: the same repository (made here: BENCH_COMMITS commits,
# a few MB of incompressible content) from the same git smart-HTTP server
# (`git http-backend` behind scripts/bench/git_http_bridge.py, in a network
# namespace this script creates on 198.18.78.0/24), cloned
#   - on the host with `git clone` (shallow as pods clone, and full), and
#   - in a pod: the agent's own clone of a pod created with `repository`
#     (the "repository cloned (N ms)" event: credential helper set-up and
#     `git clone --depth 1 --recurse-submodules --shallow-submodules`), and
#     `git clone` run in the pod through exec (shallow and full), timed
#     inside the pod,
# on gVisor and youki pods. Prints each time (median of BENCH_RUNS) and the
# pod/host ratio. Goal: a pod's clone within 1.3x the host's.
#
# Run as root: bash scripts/bench/clone.sh
# Env: BENCH_COMMITS (default 300), BENCH_RUNS (default 3), PINACLE_BIN
# (default: target/debug/pinacle, built here; clone time is git's, not
# Pinacle's), PINACLE_TEST_IMAGES (default /var/tmp/pinacle-test/images,
# built by scripts/test.sh; the pods use the `base` image, which has git).
set -euo pipefail
cd "$(dirname "$0")/../.."
COMMITS=${BENCH_COMMITS:-300}
RUNS=${BENCH_RUNS:-3}
IMAGES=${PINACLE_TEST_IMAGES:-/var/tmp/pinacle-test/images}
NS=pncbench-git HVETH=pncbgitv PVETH=pncbgitp PFX=198.18.78
BRIDGE=pncbenchcl SUBNET=10.231.78.0/24
ADMIN=pnc_bench-admin-token-0123456789
[[ $EUID -eq 0 ]] || { echo "run as root (pods, network namespaces)" >&2; exit 1; }
for tool in git curl python3 ip nft; do command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }; done
[[ -d $IMAGES/base ]] || { echo "no base image in $IMAGES: run scripts/test.sh first" >&2; exit 1; }

if [[ -z ${PINACLE_BIN:-} ]]; then
    cargo build -p pinacle -p pinacle-youki
    PINACLE_BIN=$PWD/target/debug/pinacle
fi

TMP=$(mktemp -d /var/tmp/pinacle-bench-clone.XXXXXX)
chmod 755 "$TMP" # youki pods: searchable by their root group
SERVER_PID= BRIDGE_PID= URL=
cleanup() {
    set +e
    if [[ -n $URL ]]; then
        for pod in cl-gvisor cl-youki; do curl -s -X DELETE "$URL/api/v1/pods/$pod" -H "authorization: Bearer $ADMIN" >/dev/null; done
        for _ in $(seq 100); do
            left=$(curl -s "$URL/api/v1/pods" -H "authorization: Bearer $ADMIN" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["pods"]))' 2>/dev/null)
            [[ $left == 0 ]] && break
            sleep 0.3
        done
    fi
    for pid in $SERVER_PID $BRIDGE_PID; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
    ip link del "$HVETH" 2>/dev/null; ip netns del "$NS" 2>/dev/null
    ip link del "$BRIDGE" 2>/dev/null; nft delete table inet "pinacle_$BRIDGE" 2>/dev/null
    # only once nothing is mounted below the data directory any more
    if ! grep -q " $TMP/" /proc/self/mountinfo; then rm -rf "$TMP"; else echo "left $TMP (mounts remain)" >&2; fi
}
trap cleanup EXIT

hostgit() { GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=Bench GIT_AUTHOR_EMAIL=b@example.invalid \
    GIT_COMMITTER_NAME=Bench GIT_COMMITTER_EMAIL=b@example.invalid git "$@"; }

echo "making the repository ($COMMITS commits)..."
mkdir -p "$TMP/work" "$TMP/repos/public"
hostgit -C "$TMP/work" init -q -b main
for i in $(seq "$COMMITS"); do
    d=$TMP/work/src/$((i % 20))
    mkdir -p "$d"
    head -c 12288 /dev/urandom | base64 >"$d/file$((i % 10)).txt"
    printf 'commit %s\n' "$i" >>"$TMP/work/CHANGES"
    hostgit -C "$TMP/work" add -A
    hostgit -C "$TMP/work" commit -q -m "change $i"
done
hostgit clone -q --bare "$TMP/work" "$TMP/repos/public/bench.git"
hostgit -C "$TMP/repos/public/bench.git" gc -q
echo "repository: $(du -sh "$TMP/repos/public/bench.git" | cut -f1) packed, $(du -sh --exclude=.git "$TMP/work" | cut -f1) checked out, $COMMITS commits"

ip netns add "$NS"
ip link add "$HVETH" type veth peer name "$PVETH"
ip link set "$PVETH" netns "$NS"
ip addr add "$PFX.1/24" dev "$HVETH"; ip link set "$HVETH" up
ip -n "$NS" addr add "$PFX.2/24" dev "$PVETH"; ip -n "$NS" link set "$PVETH" up; ip -n "$NS" link set lo up
GIT_TEST_USER=x GIT_TEST_TOKEN=unused GIT_TEST_LOG=$TMP/requests.log \
    ip netns exec "$NS" /usr/bin/python3 scripts/bench/git_http_bridge.py "$TMP/repos" "$PFX.2" 8080 2>"$TMP/bridge.err" &
BRIDGE_PID=$!
REPO=http://$PFX.2:8080/public/bench.git
for _ in $(seq 100); do curl -sf "$REPO/info/refs?service=git-upload-pack" >/dev/null && break; sleep 0.1; done
curl -sf "$REPO/info/refs?service=git-upload-pack" >/dev/null || { echo "git server did not start" >&2; cat "$TMP/bridge.err" >&2; exit 1; }

mkdir -p "$TMP/data"
ln -s "$IMAGES" "$TMP/data/images"
PINACLE_ADMIN_TOKEN=$ADMIN PINACLE_CONFIG="$TMP/cli.json" PINACLE_KEYRING=off PINACLE_LOG=warn \
    "$PINACLE_BIN" up --data-dir "$TMP/data" --listen 127.0.0.1:0 --rate-limit 0 --proxy-listen none --ssh-listen none \
    --pod-network bridge --pod-bridge "$BRIDGE" --pod-subnet "$SUBNET" --disk-overcommit 10 >"$TMP/server.out" 2>"$TMP/server.log" &
SERVER_PID=$!
for _ in $(seq 600); do
    URL=$(sed -n 's/^Pinacle API listening on //p' "$TMP/server.out")
    [[ -n $URL ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited:" >&2; cat "$TMP/server.log" >&2; exit 1; }
    sleep 0.1
done
for _ in $(seq 900); do curl -sf "$URL/readyz" >/dev/null && break; sleep 0.1; done
api() { curl -sS -X "$1" "$URL$2" -H "authorization: Bearer $ADMIN" -H 'content-type: application/json' ${3:+-d "$3"}; }
api PATCH /api/v1/admin/settings '{"youki":{"everyone":true}}' >/dev/null

# one exec in a pod: stdout (the API streams NDJSON with base64 data)
pod_exec() { # pod command...
    local argv
    argv=$(python3 -c 'import json,sys; print(json.dumps({"command": sys.argv[1:]}))' "${@:2}")
    api POST "/api/v1/pods/$1/exec" "$argv" | python3 -c '
import base64, json, sys
for line in sys.stdin:
    v = json.loads(line)
    if "data" in v and v.get("stream") == "stdout":
        sys.stdout.write(base64.b64decode(v["data"]).decode())'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

host_clone() { # flags... -> ms
    local dir=$TMP/host-clone t0
    rm -rf "$dir"
    t0=$(now_ms)
    hostgit clone -q "$@" "$REPO" "$dir"
    echo $(($(now_ms) - t0))
    rm -rf "$dir"
}
POD_CLONE='d=/tmp/clone; rm -rf $d; t0=$(date +%s%N); git clone -q "$@" '"$REPO"' $d || exit 1; t1=$(date +%s%N); rm -rf $d; echo $(( (t1 - t0) / 1000000 ))'

declare -A RESULT
for i in $(seq "$RUNS"); do host_clone --depth 1; done | median >"$TMP/h1"; RESULT[host_shallow]=$(cat "$TMP/h1")
for i in $(seq "$RUNS"); do host_clone; done | median >"$TMP/h2"; RESULT[host_full]=$(cat "$TMP/h2")

for rt in gvisor youki; do
    pod=cl-$rt
    api POST /api/v1/pods "{\"name\":\"$pod\",\"runtime\":\"$rt\",\"template\":\"blank\",\"repository\":{\"url\":\"$REPO\"}}" >/dev/null
    state=
    for _ in $(seq 1200); do
        state=$(api GET "/api/v1/pods/$pod" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
        [[ $state == running || $state == error ]] && break
        sleep 0.25
    done
    [[ $state == running ]] || { echo "pod $pod is $state" >&2; api GET "/api/v1/pods/$pod" >&2; exit 1; }
    events=$(timeout 3 curl -sN "$URL/api/v1/pods/$pod/events" -H "authorization: Bearer $ADMIN" || true)
    RESULT[${rt}_agent]=$(grep -o 'repository cloned ([0-9]* ms)' <<<"$events" | grep -o '[0-9]*' | head -1)
    for i in $(seq "$RUNS"); do pod_exec "$pod" sh -c "$POD_CLONE" sh --depth 1; echo; done | grep . | median >"$TMP/p1"
    RESULT[${rt}_shallow]=$(cat "$TMP/p1")
    for i in $(seq "$RUNS"); do pod_exec "$pod" sh -c "$POD_CLONE" sh; echo; done | grep . | median >"$TMP/p2"
    RESULT[${rt}_full]=$(cat "$TMP/p2")
done

ratio() { python3 -c "print(f'{$1 / max($2, 1):.2f}x')"; }
echo
echo "clone of $REPO ($COMMITS commits), median of $RUNS; host git $(git --version | cut -d' ' -f3)"
printf '%-44s %8s ms\n' "host: git clone --depth 1" "${RESULT[host_shallow]}"
printf '%-44s %8s ms\n' "host: git clone (full)" "${RESULT[host_full]}"
for rt in gvisor youki; do
    printf '%-44s %8s ms  (%s of host shallow)\n' "$rt pod: agent's clone (pod created, 1 run)" "${RESULT[${rt}_agent]}" "$(ratio "${RESULT[${rt}_agent]}" "${RESULT[host_shallow]}")"
    printf '%-44s %8s ms  (%s)\n' "$rt pod: git clone --depth 1" "${RESULT[${rt}_shallow]}" "$(ratio "${RESULT[${rt}_shallow]}" "${RESULT[host_shallow]}")"
    printf '%-44s %8s ms  (%s)\n' "$rt pod: git clone (full)" "${RESULT[${rt}_full]}" "$(ratio "${RESULT[${rt}_full]}" "${RESULT[host_full]}")"
done
echo "goal: a pod's clone within 1.3x the host's"
