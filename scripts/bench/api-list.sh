#!/usr/bin/env bash
# API list benchmark: authorised `GET /api/v1/pods` against a SQLite store
# holding 10,000 pods across 100 users (100 pods each, so every response
# lists 100 pods), measured with wrk on loopback at 1 and 64 connections:
# with one user's API token (pnc_...), with one user's JWT access token, and
# with all 100 users' API tokens at random (a wrk Lua script), each against
# the default server (read caches on, 1 s) and against a second server on
# the same database with `--read-cache-ms 0` (every request reads SQLite).
# As the reference in the same run, `GET /healthz` (no auth, no database)
# at the same connection counts shows the HTTP stack's ceiling here.
# Goal: over 5,000 req/s and p99 under 20 ms.
#
# Run: bash scripts/bench/api-list.sh   (root installs wrk if it is missing)
# Env: BENCH_DURATION (wrk -d, default 10s). Talks to 127.0.0.1 only; the
# server runs API-only (`pinacle server`) on a temp data dir under /var/tmp.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${BENCH_DURATION:-10s}
USERS=100 PODS_PER_USER=100 PASSWORD="correct horse battery"

if ! command -v wrk >/dev/null; then
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "wrk not found: installing it with apt-get (Debian package 'wrk')"
        apt-get install -y wrk >/dev/null || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
    else
        echo "wrk not found: install it (apt-get install wrk) or run this script as root" >&2; exit 1
    fi
fi
for tool in sqlite3 curl python3; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done

cargo build --release -p pinacle
BIN=$PWD/target/release/pinacle

TMP=$(mktemp -d /var/tmp/pinacle-bench-list.XXXXXX)
SERVER_PID= NOCACHE_PID=
cleanup() {
    for pid in $SERVER_PID $NOCACHE_PID; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

# API only, no rate limit; PINACLE_CONFIG keeps the server from writing the
# CLI config of whoever runs this into their home directory.
PINACLE_ADMIN_TOKEN=pnc_bench-admin-token-0123456789 PINACLE_CONFIG="$TMP/cli.json" \
    "$BIN" server --data-dir "$TMP/data" --listen 127.0.0.1:0 --rate-limit 0 >"$TMP/server.out" 2>"$TMP/server.log" &
SERVER_PID=$!
URL=
for _ in $(seq 300); do
    URL=$(sed -n 's/^Pinacle API listening on //p' "$TMP/server.out")
    [[ -n $URL ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited:" >&2; cat "$TMP/server.out" "$TMP/server.log" >&2; exit 1; }
    sleep 0.1
done
[[ -n $URL ]] || { echo "server printed no URL" >&2; exit 1; }
for _ in $(seq 100); do curl -sf "$URL/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "$URL/readyz" >/dev/null || { echo "server not ready at $URL" >&2; exit 1; }
echo "server: $URL (data dir $TMP/data)"

post() { # path json [bearer] -> body; fails on a non-2xx status
    curl -sSf -X POST "$URL$1" -H 'content-type: application/json' ${3:+-H "authorization: Bearer $3"} -d "$2"
}
echo "signing up $USERS users (argon2, 2 at a time)..."
export URL PASSWORD; export -f post
seq -f 'u%03g' 1 "$USERS" | xargs -P2 -I{} bash -c 'post /api/v1/auth/signup "{\"name\":\"{}\",\"password\":\"$PASSWORD\"}" >/dev/null'
login() { post /api/v1/auth/login "{\"name\":\"${1:-u001}\",\"password\":\"$PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'; }
api_token() { post /api/v1/tokens '{"name":"bench"}' "$(login "$1")" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'; }
export -f login api_token
echo "creating an API token for each user..."
seq -f 'u%03g' 1 "$USERS" | xargs -P2 -I{} bash -c 'api_token {}' >"$TMP/tokens.txt"
API_TOKEN=$(api_token u001)
cat >"$TMP/rotate.lua" <<LUA
local tokens = {}
for line in io.lines("$TMP/tokens.txt") do tokens[#tokens + 1] = line end
request = function()
  return wrk.format("GET", "/api/v1/pods", { ["Authorization"] = "Bearer " .. tokens[math.random(#tokens)] })
end
LUA

echo "inserting $((USERS * PODS_PER_USER)) pods in one transaction..."
DB=$TMP/data/pinacle.db
sqlite3 "$DB" <<SQL
.timeout 10000
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $PODS_PER_USER - 1),
rows AS (SELECT lower(hex(randomblob(16))) AS r, u.id AS owner, n.i AS i
         FROM users u, n WHERE u.name GLOB 'u[0-9][0-9][0-9]')
INSERT INTO pods (id, owner_id, name, state, state_reason, template, image, tier, runtime,
                  host_id, created_at, updated_at, team_id)
SELECT substr(r,1,8)||'-'||substr(r,9,4)||'-4'||substr(r,14,3)||'-a'||substr(r,18,3)||'-'||substr(r,21,12),
       owner, printf('p%04d', i), 'running', NULL, 'minimal', 'busybox', 'dev.small', 'youki', 'local',
       strftime('%Y-%m-%dT%H:%M:%f', 'now', printf('-%d seconds', $PODS_PER_USER - i)) || '+00:00',
       strftime('%Y-%m-%dT%H:%M:%f', 'now', printf('-%d seconds', $PODS_PER_USER - i)) || '+00:00', NULL
FROM rows;
COMMIT;
SQL
POD_COUNT=$(sqlite3 "$DB" "select count(*) from pods")
echo "pods in the database: $POD_COUNT"
[[ $POD_COUNT -eq $((USERS * PODS_PER_USER)) ]] || { echo "expected $((USERS * PODS_PER_USER)) pods" >&2; exit 1; }

curl -sf "$URL/api/v1/pods" -H "authorization: Bearer $API_TOKEN" -o "$TMP/list.json"
LISTED=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["pods"]))' "$TMP/list.json")
echo "one GET /api/v1/pods (u001): $(wc -c <"$TMP/list.json") bytes, $LISTED pods"
[[ $LISTED -eq $PODS_PER_USER ]] || { echo "expected $PODS_PER_USER pods in the list" >&2; exit 1; }

# The same database behind a second server without read caches.
PINACLE_CONFIG="$TMP/cli2.json" "$BIN" server --data-dir "$TMP/data" --listen 127.0.0.1:0 --rate-limit 0 \
    --read-cache-ms 0 >"$TMP/nocache.out" 2>"$TMP/nocache.log" &
NOCACHE_PID=$!
NOCACHE=
for _ in $(seq 300); do
    NOCACHE=$(sed -n 's/^Pinacle API listening on //p' "$TMP/nocache.out"); [[ -n $NOCACHE ]] && break; sleep 0.1
done
[[ -n $NOCACHE ]] || { echo "second server did not start" >&2; cat "$TMP/nocache.log" >&2; exit 1; }

ROWS=()
run_wrk() { # label path conns threads [bearer|@lua] [base url]
    local out auth=() base=${6:-$URL}; echo "wrk: $1, $3 connection(s), $DURATION..."
    if [[ ${5:-} == @* ]]; then auth=(-s "${5#@}"); elif [[ -n ${5:-} ]]; then auth=(-H "Authorization: Bearer $5"); fi
    out=$(wrk -t"$4" -c"$3" -d"$DURATION" --latency "${auth[@]}" "$base$2")
    echo "$out" >>"$TMP/wrk.log"
    local bad; bad=$(sed -n 's/.*Non-2xx or 3xx responses: *//p' <<<"$out")
    ROWS+=("$1|$3|$(awk '
        function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /m$/) return v*60000; return v*1000 }
        /^Requests\/sec:/ { rps = $2 }  $1 == "50%" { p50 = ms($2) }  $1 == "99%" { p99 = ms($2) }
        END { printf "%s|%.2f|%.2f", rps, p50, p99 }' <<<"$out")|${bad:-0}")
}
curl -sf "$URL/api/v1/pods" -H "authorization: Bearer $API_TOKEN" >/dev/null  # warm
wrk -t1 -c4 -d1s "$URL/api/v1/pods" -H "Authorization: Bearer $API_TOKEN" >/dev/null
t() { echo $(( $1 > 1 ? 2 : 1 )); }
for c in 1 64; do run_wrk "healthz (ref)" /healthz "$c" "$(t "$c")"; done
JWT=$(login)  # 15-minute lifetime: fetched right before its runs
for c in 1 64; do run_wrk "api-token" /api/v1/pods "$c" "$(t "$c")" "$API_TOKEN"; done
for c in 1 64; do run_wrk "jwt" /api/v1/pods "$c" "$(t "$c")" "$JWT"; done
for c in 1 64; do run_wrk "100 tokens" /api/v1/pods "$c" "$(t "$c")" "@$TMP/rotate.lua"; done
for c in 1 64; do run_wrk "api-token nocache" /api/v1/pods "$c" "$(t "$c")" "$API_TOKEN" "$NOCACHE"; done
for c in 1 64; do run_wrk "jwt nocache" /api/v1/pods "$c" "$(t "$c")" "$JWT" "$NOCACHE"; done
for c in 1 64; do run_wrk "100 tok. nocache" /api/v1/pods "$c" "$(t "$c")" "@$TMP/rotate.lua" "$NOCACHE"; done

echo
echo "GET /api/v1/pods, $POD_COUNT pods / $USERS users in SQLite, $LISTED pods ($(wc -c <"$TMP/list.json") bytes) per response"
echo "wrk $DURATION per row on loopback, $(nproc) CPUs (wrk shares them); goal: > 5000 req/s and p99 < 20 ms"
printf '%-18s %6s %10s %9s %9s %8s  %s\n' case conns req/s p50_ms p99_ms non2xx goal
for row in "${ROWS[@]}"; do
    IFS='|' read -r label conns rps p50 p99 bad <<<"$row"
    if [[ $label == *ref* ]]; then verdict="(reference)"
    elif awk -v r="$rps" -v p="$p99" -v b="$bad" 'BEGIN { exit !(r > 5000 && p < 20 && b == 0) }'; then verdict=met
    else verdict=MISSED; fi
    printf '%-18s %6s %10s %9s %9s %8s  %s\n' "$label" "$conns" "$rps" "$p50" "$p99" "$bad" "$verdict"
done
