#!/usr/bin/env bash
# OCI pull benchmark: a ~200 MB image (4 gzip layers of incompressible data,
# 50 MB each) built here as an OCI layout, pushed with skopeo to Debian's
# docker-registry on loopback, then pulled BENCH_RUNS times (default 3) each,
# alternating, by:
#   skopeo:  skopeo copy docker://127.0.0.1:PORT/bench:v1 oci:FRESH_DIR:v1
#            (download + verify + write blobs)
#   pinacle: oci/examples/pull.rs through pinacle-oci into a fresh store
#            (download + verify + write blobs + fsync + unpack the rootfs)
# and prints MB/s (compressed image bytes / wall time) of each run, the
# medians and pinacle/skopeo. Goal: pinacle >= 0.8x skopeo.
# Then (unless BENCH_POD=0) a cold pod from that image: a release
# `pinacle up` on a fresh data dir, pod create -> running (pull, unpack,
# start in gVisor), a second pod from the same image (warm) and a pod from
# the host-built busybox image for reference.
#
# Run: bash scripts/bench/oci-pull.sh   (needs docker-registry, skopeo, python3)
# Env: BENCH_RUNS, BENCH_LAYER_MB (default 50), BENCH_LAYERS (default 4).
# Talks to 127.0.0.1 only; works under a temp dir in /var/tmp, removed at exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${BENCH_RUNS:-3}
LAYER_MB=${BENCH_LAYER_MB:-50}
LAYERS=${BENCH_LAYERS:-4}

for tool in docker-registry skopeo python3 sha256sum gzip; do
    command -v "$tool" >/dev/null || { echo "$tool is required (apt-get install docker-registry skopeo)" >&2; exit 1; }
done

cargo build --release -q -p pinacle-oci --example pull
PULL=$PWD/target/release/examples/pull

TMP=$(mktemp -d /var/tmp/pinacle-bench-oci.XXXXXX)
REG_PID=
cleanup() {
    if [[ -n $REG_PID ]]; then kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; fi
    rm -rf --one-file-system "$TMP"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$TMP/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $TMP/registry
http:
  addr: 127.0.0.1:$PORT
EOF
docker-registry serve "$TMP/registry.yml" >"$TMP/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
    sleep 0.1
done

# The OCI layout: LAYERS gzip layers, each one LAYER_MB file of random bytes.
echo "building a $((LAYERS * LAYER_MB)) MB image ($LAYERS layers)"
LAYOUT=$TMP/layout
mkdir -p "$LAYOUT/blobs/sha256" "$TMP/files"
printf '{"imageLayoutVersion":"1.0.0"}' >"$LAYOUT/oci-layout"
LAYER_JSON= DIFF_IDS=
# layer 0: BusyBox, so pods from the image have a shell
mkdir -p "$TMP/files/0/bin"
cp "$(command -v busybox)" "$TMP/files/0/bin/busybox"
ln -s busybox "$TMP/files/0/bin/sh"
tar -C "$TMP/files/0" --owner=0 --group=0 -cf "$TMP/layer0.tar" bin
DIFF=$(sha256sum "$TMP/layer0.tar" | cut -d' ' -f1)
gzip -1 -c "$TMP/layer0.tar" >"$TMP/layer0.tgz"
D=$(sha256sum "$TMP/layer0.tgz" | cut -d' ' -f1); SIZE=$(stat -c %s "$TMP/layer0.tgz")
mv "$TMP/layer0.tgz" "$LAYOUT/blobs/sha256/$D"; rm -rf "$TMP/layer0.tar" "$TMP/files/0"
LAYER_JSON="{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$D\",\"size\":$SIZE}"
DIFF_IDS="\"sha256:$DIFF\""
for i in $(seq "$LAYERS"); do
    mkdir -p "$TMP/files/$i/data"
    head -c "$((LAYER_MB << 20))" /dev/urandom >"$TMP/files/$i/data/blob$i.bin"
    tar -C "$TMP/files/$i" --owner=0 --group=0 -cf "$TMP/layer$i.tar" data
    DIFF=$(sha256sum "$TMP/layer$i.tar" | cut -d' ' -f1)
    gzip -1 -c "$TMP/layer$i.tar" >"$TMP/layer$i.tgz"
    D=$(sha256sum "$TMP/layer$i.tgz" | cut -d' ' -f1)
    SIZE=$(stat -c %s "$TMP/layer$i.tgz")
    mv "$TMP/layer$i.tgz" "$LAYOUT/blobs/sha256/$D"
    rm -rf "$TMP/layer$i.tar" "$TMP/files/$i"
    LAYER_JSON+="${LAYER_JSON:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$D\",\"size\":$SIZE}"
    DIFF_IDS+="${DIFF_IDS:+,}\"sha256:$DIFF\""
done
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":[%s]}}' "$DIFF_IDS" >"$TMP/config.json"
CD=$(sha256sum "$TMP/config.json" | cut -d' ' -f1); CS=$(stat -c %s "$TMP/config.json")
mv "$TMP/config.json" "$LAYOUT/blobs/sha256/$CD"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' "$CD" "$CS" "$LAYER_JSON" >"$TMP/manifest.json"
MD=$(sha256sum "$TMP/manifest.json" | cut -d' ' -f1); MS=$(stat -c %s "$TMP/manifest.json")
mv "$TMP/manifest.json" "$LAYOUT/blobs/sha256/$MD"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' "$MD" "$MS" >"$LAYOUT/index.json"
BYTES=$(du -cb "$LAYOUT"/blobs/sha256/* | tail -1 | cut -f1)

skopeo --insecure-policy copy --quiet --preserve-digests --dest-tls-verify=false \
    "oci:$LAYOUT:v1" "docker://127.0.0.1:$PORT/bench:v1"
rm -rf "$LAYOUT"
REF=127.0.0.1:$PORT/bench:v1

now() { date +%s.%N; }
mbps() { python3 -c "print(f'{$BYTES / 1e6 / ($2 - $1):.1f}')"; }
SK=() PN=()
for run in $(seq "$RUNS"); do
    sync
    t0=$(now)
    skopeo --insecure-policy copy --quiet --src-tls-verify=false "docker://$REF" "oci:$TMP/skopeo-$run:v1"
    t1=$(now)
    SK+=("$(mbps "$t0" "$t1")")
    rm -rf "$TMP/skopeo-$run"
    sync
    t0=$(now)
    "$PULL" "$TMP/store-$run" "$REF" "127.0.0.1:$PORT" >/dev/null 2>&1
    t1=$(now)
    PN+=("$(mbps "$t0" "$t1")")
    rm -rf "$TMP/store-$run"
    echo "run $run: skopeo ${SK[-1]} MB/s, pinacle-oci ${PN[-1]} MB/s"
done
python3 - "$BYTES" "${SK[*]}" "${PN[*]}" <<'EOF'
import statistics, sys
size = int(sys.argv[1])
sk = [float(x) for x in sys.argv[2].split()]
pn = [float(x) for x in sys.argv[3].split()]
msk, mpn = statistics.median(sk), statistics.median(pn)
print(f"image: {size / 1e6:.1f} MB compressed, {len(sk)} runs each (median)")
print(f"skopeo copy (to an OCI dir):        {msk:.1f} MB/s")
print(f"pinacle-oci pull (store + rootfs):   {mpn:.1f} MB/s")
print(f"ratio pinacle/skopeo: {mpn / msk:.2f}x (goal >= 0.8x)")
EOF

[[ ${BENCH_POD:-1} = 0 ]] && exit 0

# A cold pod from the registry image, beside a warm one and a host image.
cargo build --release -q -p pinacle -p pinacle-youki
bash scripts/build-supervisor.sh >/dev/null
BIN=$PWD/target/release/pinacle
BRIDGE=pncbench5 SUBNET=10.231.25.0/24 TOKEN=pnc_bench-oci-token-0123456789
mkdir -p "$TMP/data/images"
ln -s /var/tmp/pinacle-test/images/busybox "$TMP/data/images/busybox"
PINACLE_INSECURE_REGISTRIES=127.0.0.1:$PORT PINACLE_ADMIN_TOKEN=$TOKEN PINACLE_CONFIG=$TMP/cli.json \
    "$BIN" up --data-dir "$TMP/data" --listen 127.0.0.1:0 --rate-limit 0 --pod-network bridge --pod-bridge $BRIDGE \
    --pod-subnet $SUBNET --proxy-listen none --ssh-listen none --disk-overcommit 100 >"$TMP/out" 2>"$TMP/log" &
UP_PID=$!
API=
stop_up() {
    # pods go first (sandboxes, mounts, disks), then the server
    for pod in cold warm host; do
        curl -s -X DELETE -H "Authorization: Bearer $TOKEN" "$API/api/v1/pods/$pod" >/dev/null 2>&1 || true
    done
    for _ in $(seq 200); do
        grep -q "$TMP" /proc/mounts || break
        sleep 0.1
    done
    kill "$UP_PID" 2>/dev/null || true; wait "$UP_PID" 2>/dev/null || true
    ip link del "$BRIDGE" 2>/dev/null || true
    nft delete table inet "pinacle_$BRIDGE" 2>/dev/null || true
    cleanup
}
trap stop_up EXIT
API=
for _ in $(seq 300); do API=$(sed -n 's/^Pinacle API listening on //p' "$TMP/out"); [[ -n $API ]] && break; sleep 0.1; done
[[ -n $API ]] || { cat "$TMP/log"; exit 1; }
ready() { # NAME JSON_BODY -> ms from the create request to running
    local t0 t1 state
    t0=$(now)
    curl -sf -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d "$2" "$API/api/v1/pods" >/dev/null
    for _ in $(seq 6000); do
        state=$(curl -sf -H "Authorization: Bearer $TOKEN" "$API/api/v1/pods/$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
        [[ $state = running || $state = error ]] && break
        sleep 0.05
    done
    t1=$(now)
    [[ $state = running ]] || { echo "pod $1: $state" >&2; tail -20 "$TMP/log" >&2; exit 1; }
    python3 -c "print(round(($t1 - $t0) * 1000))"
}
COLD=$(ready cold "{\"name\":\"cold\",\"config\":\"image: $REF\\n\"}")
WARM=$(ready warm "{\"name\":\"warm\",\"config\":\"image: $REF\\n\"}")
HOST=$(ready host '{"name":"host","template":"minimal"}')
echo "pod from the registry image, cold (pull + unpack + start, gVisor): $COLD ms"
echo "pod from the same image, warm (pinned digest in the store):        $WARM ms"
echo "pod from the host-built busybox image (reference):                 $HOST ms"
