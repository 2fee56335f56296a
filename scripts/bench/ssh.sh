#!/usr/bin/env bash
# SSH gateway benchmark, side by side in one run against the same youki pod:
#   gateway      ssh -p GATEWAY bench@127.0.0.1 (the Pinacle gateway: key
#                lookup, policy, supervisor exec into the pod; scp through
#                the supervisor's SFTP server in the pod)
#   sshd→pod     Debian's OpenSSH sshd on loopback in front of the same pod:
#                every command nsenter's into the pod's namespaces, and its
#                SFTP subsystem is the same in-pod SFTP server
#   sshd→host    the same sshd without a pod: commands and Debian's
#                sftp-server run on the host (the floor)
# Figures: connection setup (`ssh -o BatchMode=yes HOST true`, repeated;
# median and p95), scp throughput (BENCH_MB MiB up and down, median of 3)
# and ssh -R throughput (BENCH_MB MiB to a reader where the forward listens).
# Goals: setup within 1.5x of sshd→pod, throughput at least 80% of it.
#
# Run as root after scripts/test.sh built the test images:
#   bash scripts/bench/ssh.sh          (BENCH_RUNS=30 BENCH_MB=256)
# Talks only to 127.0.0.1 and the pod this script creates.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${BENCH_RUNS:-30}
MB=${BENCH_MB:-256}
# (installing openssh-server by hand would start Debian's sshd on port 22;
# setup.sh installs it without starting it)
command -v ssh >/dev/null && [[ -x /usr/sbin/sshd ]] || { echo "needs OpenSSH's client and server: bash scripts/setup.sh --test"; exit 1; }
cargo build --release -p pinacle -p pinacle-youki 2>/dev/null || cargo build --release --workspace
bash scripts/build-supervisor.sh >/dev/null
BIN=$PWD/target/release/pinacle
TMP=$(mktemp -d /var/tmp/pinacle-bench-ssh.XXXXXX)
BRIDGE=pncbench3 SUBNET=10.231.22.0/24
TOKEN=pnc_bench-ssh-token-0123456789abcdef
PID= SSHD_POD= SSHD_HOST= SERVER= FWD=
cleanup() {
    for p in $SSHD_POD $SSHD_HOST $SERVER $FWD; do kill "$p" 2>/dev/null || true; done
    if [[ -n $PID ]]; then
        PINACLE_API=$API PINACLE_TOKEN=$TOKEN "$BIN" pod delete bench --wait >/dev/null 2>&1 || true
        kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true
    fi
    ip link del "$BRIDGE" 2>/dev/null || true
    nft delete table inet "pinacle_$BRIDGE" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$TMP/data" "$TMP/host"
ln -s /var/tmp/pinacle-test/images "$TMP/data/images"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GPORT=$(port) PPORT=$(port) HPORT=$(port)
PINACLE_ADMIN_TOKEN=$TOKEN PINACLE_CONFIG=$TMP/cli.json PINACLE_KEYRING=off "$BIN" up --data-dir "$TMP/data" --listen 127.0.0.1:0 \
    --rate-limit 0 --pod-network bridge --pod-bridge $BRIDGE --pod-subnet $SUBNET --proxy-listen none \
    --ssh-listen 127.0.0.1:$GPORT --ssh-host 127.0.0.1 --ssh-allow-remote-forward >"$TMP/out" 2>"$TMP/log" &
PID=$!
API=
for _ in $(seq 300); do API=$(sed -n 's/^Pinacle API listening on //p' "$TMP/out"); [[ -n $API ]] && break; sleep 0.1; done
[[ -n $API ]] || { cat "$TMP/log"; exit 1; }
export PINACLE_API=$API PINACLE_TOKEN=$TOKEN PINACLE_CONFIG=$TMP/cli.json PINACLE_KEYRING=off
"$BIN" admin settings --youki-everyone true >/dev/null   # youki pods are refused by default
"$BIN" pod create bench --template minimal --runtime youki --wait >/dev/null
ssh-keygen -q -t ed25519 -N "" -f "$TMP/id" -C bench
"$BIN" ssh-key add "$TMP/id.pub" --name bench >/dev/null
HOST_CA=$(curl -sf -H "Authorization: Bearer $TOKEN" "$API/api/v1/ssh" | python3 -c 'import json,sys; print(json.load(sys.stdin)["host_ca"])')
echo "@cert-authority [127.0.0.1]:$GPORT $HOST_CA" >"$TMP/known_hosts"

# the pod's init process, for nsenter
ID=$("$BIN" pod show bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"].replace("-",""))')
POD_PID=
for p in $(ps -eo pid --no-headers); do
    if grep -q "pinacle-$ID" "/proc/$p/cgroup" 2>/dev/null; then POD_PID=$p; break; fi
done
[[ -n $POD_PID ]] || { echo "cannot find the pod's processes"; exit 1; }

# Debian's sshd, twice: into the pod and on the host
mkdir -p /run/sshd
ssh-keygen -q -t ed25519 -N "" -f "$TMP/sshd_host_key"
cp "$TMP/id.pub" "$TMP/authorized_keys"
ENTER="nsenter -t $POD_PID -m -u -i -n -p -r -w"
cat >"$TMP/enter.sh" <<ENTER_SCRIPT
#!/bin/sh
# into the pod's cgroups first, so its limits hold as for the gateway's commands
for f in /sys/fs/cgroup/*/pinacle/pinacle-$ID/cgroup.procs /sys/fs/cgroup/pinacle/pinacle-$ID/cgroup.procs; do
    [ -w "\$f" ] && echo \$\$ >"\$f" 2>/dev/null
done
# sshd's ForceCommand: the client's command (or a login shell) in the pod;
# for the SFTP subsystem sshd passes the Subsystem line as the command
if [ -n "\$SSH_ORIGINAL_COMMAND" ]; then
    case "\$SSH_ORIGINAL_COMMAND" in
        *sftp-server*) exec $ENTER /bin/sh -c 'cd /workspace && exec /.pinacle/bin/pinacle-supervisor sftp-server' ;;
    esac
    exec $ENTER /bin/sh -c "cd /workspace && \$SSH_ORIGINAL_COMMAND"
fi
exec $ENTER /bin/sh -c 'cd /workspace && exec /bin/sh -l'
ENTER_SCRIPT
chmod 755 "$TMP/enter.sh"
sshd_conf() {
    cat <<SSHD
ListenAddress 127.0.0.1:$1
HostKey $TMP/sshd_host_key
PidFile none
AuthorizedKeysFile $TMP/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
$2
SSHD
}
sshd_conf "$PPORT" "Subsystem sftp pinacle-supervisor-sftp-server
ForceCommand $TMP/enter.sh" >"$TMP/sshd_pod.conf"
sshd_conf "$HPORT" "Subsystem sftp /usr/lib/openssh/sftp-server" >"$TMP/sshd_host.conf"
# sshd runs commands through root's login shell, and bash reads ~/.bashrc
# when sshd starts it: a development machine's rc (pyenv, nvm...) would be
# timed too. The reference sshd gets a fresh machine's empty one, in a mount
# namespace of its own.
: >"$TMP/empty_rc"
run_sshd() {
    if [[ -e /root/.bashrc ]]; then
        exec unshare -m sh -c "mount --bind '$TMP/empty_rc' /root/.bashrc && exec /usr/sbin/sshd -D -e -f '$1'"
    else
        exec /usr/sbin/sshd -D -e -f "$1"
    fi
}
run_sshd "$TMP/sshd_pod.conf" 2>"$TMP/sshd_pod.log" & SSHD_POD=$!
run_sshd "$TMP/sshd_host.conf" 2>"$TMP/sshd_host.log" & SSHD_HOST=$!
for p in $PPORT $HPORT; do
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done
for p in $PPORT $HPORT; do
    echo "[127.0.0.1]:$p $(cut -d' ' -f1,2 "$TMP/sshd_host_key.pub")" >>"$TMP/known_hosts"
done

OPTS=(-F /dev/null -i "$TMP/id" -o IdentitiesOnly=yes -o BatchMode=yes -o "UserKnownHostsFile=$TMP/known_hosts" -o StrictHostKeyChecking=yes)
TARGETS=("gateway:$GPORT:bench" "sshd→pod:$PPORT:root" "sshd→host:$HPORT:root")

# sanity: each lands where it should
for t in "${TARGETS[@]}"; do
    IFS=: read -r name p user <<<"$t"
    where=$(ssh "${OPTS[@]}" -p "$p" "$user@127.0.0.1" 'hostname; pwd' | tr '\n' ' ')
    printf '%-10s lands in: %s\n' "$name" "$where"
done

stats() { python3 -c '
import statistics, sys
v = sorted(float(x) for x in sys.stdin.read().split())
p95 = v[min(len(v) - 1, int(round(0.95 * (len(v) - 1))))]
print(f"{statistics.median(v):8.1f} {p95:8.1f}")'; }

echo
echo "connection setup: ssh -o BatchMode=yes HOST true, $RUNS runs each (ms)"
printf '%-10s %8s %8s\n' "" "median" "p95"
declare -A SETUP
for t in "${TARGETS[@]}"; do
    IFS=: read -r name p user <<<"$t"
    ssh "${OPTS[@]}" -p "$p" "$user@127.0.0.1" true   # warm
    times=()
    for _ in $(seq "$RUNS"); do
        t0=$(date +%s%N)
        ssh "${OPTS[@]}" -p "$p" "$user@127.0.0.1" true
        t1=$(date +%s%N)
        times+=("$(( (t1 - t0) / 1000 ))")
    done
    line=$(printf '%s\n' "${times[@]}" | awk '{print $1/1000}' | stats)
    SETUP[$name]=$(echo "$line" | awk '{print $1}')
    printf '%-10s %s\n' "$name" "$line"
done

echo
head -c $((MB * 1024 * 1024)) /dev/urandom >"$TMP/payload"
echo "scp throughput: $MB MiB up and down, median of 3 (MiB/s)"
printf '%-10s %8s %8s\n' "" "up" "down"
declare -A UP DOWN
for t in "${TARGETS[@]}"; do
    IFS=: read -r name p user <<<"$t"
    dest=/workspace/payload
    [[ $name == "sshd→host" ]] && dest=$TMP/host/payload
    ups=() downs=()
    for _ in 1 2 3; do
        t0=$(date +%s%N); scp -q "${OPTS[@]}" -P "$p" "$TMP/payload" "$user@127.0.0.1:$dest"; t1=$(date +%s%N)
        ups+=("$(python3 -c "print($MB / (($t1 - $t0) / 1e9))")")
        rm -f "$TMP/back"
        t0=$(date +%s%N); scp -q "${OPTS[@]}" -P "$p" "$user@127.0.0.1:$dest" "$TMP/back"; t1=$(date +%s%N)
        downs+=("$(python3 -c "print($MB / (($t1 - $t0) / 1e9))")")
    done
    cmp -s "$TMP/payload" "$TMP/back" || { echo "$name: the file came back different"; exit 1; }
    up=$(printf '%s\n' "${ups[@]}" | python3 -c 'import statistics,sys; print(f"{statistics.median(float(x) for x in sys.stdin.read().split()):.1f}")')
    down=$(printf '%s\n' "${downs[@]}" | python3 -c 'import statistics,sys; print(f"{statistics.median(float(x) for x in sys.stdin.read().split()):.1f}")')
    UP[$name]=$up
    DOWN[$name]=$down
    printf '%-10s %8s %8s\n' "$name" "$up" "$down"
    ssh "${OPTS[@]}" -p "$p" "$user@127.0.0.1" "rm -f $dest"
done

# ssh -R: a server beside the client sends the payload to a reader where
# the forward listens (the pod's loopback for the gateway, the host's for
# sshd: sshd cannot listen inside the pod). The reader is the pod's static
# busybox nc in both places.
echo
echo "ssh -R throughput: $MB MiB from a server beside the client to nc where the forward listens, median of 3 (MiB/s)"
cp /var/tmp/pinacle-test/images/busybox/rootfs/bin/busybox "$TMP/busybox"
python3 - "$TMP/payload" >"$TMP/serve_port" <<'PY' &
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
with open(sys.argv[1], "rb") as f:
    for _ in range(200):
        c, _ = s.accept()
        f.seek(0)
        c.sendfile(f)
        c.close()
PY
SERVER=$!
for _ in $(seq 50); do [[ -s $TMP/serve_port ]] && break; sleep 0.1; done
SPORT=$(cat "$TMP/serve_port")
declare -A RFWD
for t in "gateway:$GPORT:bench" "sshd→host:$HPORT:root"; do
    IFS=: read -r name p user <<<"$t"
    RP=$(port)
    ssh "${OPTS[@]}" -p "$p" -N -o ExitOnForwardFailure=yes -R "$RP:127.0.0.1:$SPORT" "$user@127.0.0.1" & FWD=$!
    if [[ $name == gateway ]]; then READ=($ENTER /bin/busybox nc 127.0.0.1 "$RP"); else READ=("$TMP/busybox" nc 127.0.0.1 "$RP"); fi
    got=0
    for _ in $(seq 100); do
        got=$("${READ[@]}" 2>/dev/null | wc -c || true)
        [[ $got -gt 0 ]] && break
        sleep 0.1
    done
    [[ $got -eq $((MB * 1024 * 1024)) ]] || { echo "$name: -R delivered $got bytes"; kill $FWD; exit 1; }
    rates=()
    for _ in 1 2 3; do
        t0=$(date +%s%N); got=$("${READ[@]}" | wc -c || true); t1=$(date +%s%N)
        [[ $got -eq $((MB * 1024 * 1024)) ]] || { echo "$name: -R delivered $got bytes"; kill $FWD; exit 1; }
        rates+=("$(python3 -c "print($MB / (($t1 - $t0) / 1e9))")")
    done
    kill $FWD; wait $FWD 2>/dev/null || true
    RFWD[$name]=$(printf '%s\n' "${rates[@]}" | python3 -c 'import statistics,sys; print(f"{statistics.median(float(x) for x in sys.stdin.read().split()):.1f}")')
    printf '%-10s %8s\n' "$name" "${RFWD[$name]}"
done
kill $SERVER 2>/dev/null || true

echo
python3 - "${SETUP[gateway]}" "${SETUP[sshd→pod]}" "${UP[gateway]}" "${UP[sshd→pod]}" "${DOWN[gateway]}" "${DOWN[sshd→pod]}" <<'PY'
import sys
g, s, gu, su, gd, sd = map(float, sys.argv[1:])
print(f"setup: gateway {g:.1f} ms vs sshd→pod {s:.1f} ms = {g / s:.2f}x (goal <= 1.5x)")
print(f"scp up: gateway {gu:.1f} MiB/s vs sshd→pod {su:.1f} MiB/s = {100 * gu / su:.0f}% (goal >= 80%)")
print(f"scp down: gateway {gd:.1f} MiB/s vs sshd→pod {sd:.1f} MiB/s = {100 * gd / sd:.0f}% (goal >= 80%)")
PY
echo "ssh -R: gateway ${RFWD[gateway]} MiB/s vs sshd→host ${RFWD[sshd→host]} MiB/s (no goal; sshd cannot listen in the pod)"
