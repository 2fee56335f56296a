#!/usr/bin/env bash
# API list benchmark across stores and servers (issue 17): authorised
# `GET /api/v1/pods` with 10,000 pods across 100 users (each response lists
# one user's 100 pods), every request with one of the 100 users' API tokens
# at random (a wrk Lua script), measured through nginx (keep-alive to its
# upstreams) at 1 and 64 connections for:
#   SQLite, 1 server        `pinacle server` on its embedded SQLite
#   PostgreSQL, 1 server    `pinacle server --database-url postgres://… --redis-url …`
#   PostgreSQL, 2 servers   two such servers on the same database, nginx
#                           spreading requests over both
# once with the servers' default read caches (1 s) and once with
# `--read-cache-ms 0` (every request authenticates and lists from the
# database). The reference in the same run: `GET /healthz` through nginx
# (no auth, no database), the HTTP stack's ceiling here.
# PostgreSQL 15, Redis and nginx are Debian's packages, started by this
# script on 127.0.0.1 with private ports and removed at the end.
#
# Run as root: bash scripts/bench/api-list-scale.sh   (BENCH_DURATION=10s)
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${BENCH_DURATION:-10s}
USERS=100 PODS_PER_USER=100 PASSWORD="correct horse battery"
MASTER_KEY=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
TOKEN=pnc_bench-scale-admin-token-0123456789
for tool in wrk nginx redis-server sqlite3 curl python3 runuser; do
    command -v "$tool" >/dev/null || { echo "$tool is required (scripts/setup.sh --test installs it; wrk: apt-get install wrk)" >&2; exit 1; }
done
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[[ -x $PGBIN/initdb ]] || { echo "PostgreSQL is not installed: scripts/setup.sh --test" >&2; exit 1; }

cargo build --release -p pinacle -p pinacle-youki
BIN=$PWD/target/release/pinacle
TMP=$(mktemp -d /var/tmp/pinacle-bench-scale.XXXXXX)
PIDS=() REDIS= NGINX=
cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
    [[ -n $NGINX ]] && nginx -p "$TMP" -c "$TMP/nginx.conf" -s stop 2>/dev/null
    [[ -n $REDIS ]] && { kill "$REDIS"; wait "$REDIS"; } 2>/dev/null
    [[ -d $TMP/pg ]] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$TMP/pg" -m immediate stop >/dev/null 2>&1
    rm -rf --one-file-system "$TMP"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "starting PostgreSQL and Redis..."
chown postgres "$TMP"
PGPORT=$(port)
runuser -u postgres -- "$PGBIN/initdb" -D "$TMP/pg" -A trust -U pinacle --no-sync >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$TMP/pg" -l "$TMP/pg.log" -w -t 60 \
    -o "-p $PGPORT -k $TMP -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
psql() { runuser -u postgres -- "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U pinacle -v ON_ERROR_STOP=1 -q "$@"; }
psql -d postgres -c "CREATE DATABASE pinacle"
PG_URL=postgres://pinacle@127.0.0.1:$PGPORT/pinacle
RPORT=$(port)
redis-server --bind 127.0.0.1 --port "$RPORT" --save '' --appendonly no --dir "$TMP" >/dev/null &
REDIS=$!

SQ_PORT=$(port) P1_PORT=$(port) P2_PORT=$(port)
start_server() { # name port cache-ms [args...]
    local name=$1 p=$2 cache=$3; shift 3
    PINACLE_ADMIN_TOKEN=$TOKEN PINACLE_MASTER_KEY=$MASTER_KEY PINACLE_CONFIG="$TMP/$name.json" \
        "$BIN" server --listen "127.0.0.1:$p" --proxy-listen none --ssh-listen none --rate-limit 0 --read-cache-ms "$cache" "$@" >"$TMP/$name.out" 2>>"$TMP/$name.log" &
    PIDS+=($!)
    for _ in $(seq 600); do curl -sf "http://127.0.0.1:$p/readyz" >/dev/null && return; sleep 0.1; done
    echo "server $name did not become ready:" >&2; cat "$TMP/$name.log" >&2; exit 1
}
start_all() { # cache-ms
    start_server sqlite "$SQ_PORT" "$1" --data-dir "$TMP/sqlite"
    start_server pg1 "$P1_PORT" "$1" --data-dir "$TMP/pg1" --database-url "$PG_URL" --redis-url "redis://127.0.0.1:$RPORT" --advertise-url "http://127.0.0.1:$P1_PORT"
    start_server pg2 "$P2_PORT" "$1" --data-dir "$TMP/pg2" --database-url "$PG_URL" --redis-url "redis://127.0.0.1:$RPORT" --advertise-url "http://127.0.0.1:$P2_PORT"
}
stop_all() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
start_all 1000

post() { # base path json [bearer] -> body; fails on a non-2xx status
    curl -sSf -X POST "$1$2" -H 'content-type: application/json' ${4:+-H "authorization: Bearer $4"} -d "$3"
}
login() { post "$1" /api/v1/auth/login "{\"name\":\"$2\",\"password\":\"$PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'; }
api_token() { post "$1" /api/v1/tokens '{"name":"bench"}' "$(login "$1" "$2")" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'; }
export PASSWORD; export -f post login api_token
for store in sqlite pg1; do
    base=http://127.0.0.1:$([[ $store == sqlite ]] && echo "$SQ_PORT" || echo "$P1_PORT")
    echo "$store: signing up $USERS users and an API token for each (argon2, 2 at a time)..."
    seq -f 'u%03g' 1 "$USERS" | xargs -P2 -I{} bash -c "post $base /api/v1/auth/signup '{\"name\":\"{}\",\"password\":\"$PASSWORD\"}' >/dev/null"
    seq -f 'u%03g' 1 "$USERS" | xargs -P2 -I{} bash -c "api_token $base {}" >"$TMP/tokens-$store.txt"
done

echo "inserting $((USERS * PODS_PER_USER)) pods into each store..."
sqlite3 "$TMP/sqlite/pinacle.db" <<SQL
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
psql -d pinacle <<SQL
INSERT INTO pods (id, owner_id, name, state, state_reason, template, image, tier, runtime,
                  host_id, created_at, updated_at, team_id)
SELECT gen_random_uuid()::text, u.id, 'p' || lpad(i::text, 4, '0'), 'running', NULL, 'minimal', 'busybox',
       'dev.small', 'youki', 'local', now() - make_interval(secs => $PODS_PER_USER - i),
       now() - make_interval(secs => $PODS_PER_USER - i), NULL
FROM users u, generate_series(0, $PODS_PER_USER - 1) AS i WHERE u.name ~ '^u[0-9]{3}\$';
ANALYZE;
SQL
SQ_COUNT=$(sqlite3 "$TMP/sqlite/pinacle.db" "select count(*) from pods")
PG_COUNT=$(psql -d pinacle -At -c "select count(*) from pods")
echo "pods: SQLite $SQ_COUNT, PostgreSQL $PG_COUNT"
[[ $SQ_COUNT -eq $((USERS * PODS_PER_USER)) && $PG_COUNT -eq $((USERS * PODS_PER_USER)) ]] || { echo "expected $((USERS * PODS_PER_USER)) pods in each" >&2; exit 1; }

# nginx: one port per topology, keep-alive to the servers
NG_SQ=$(port) NG_PG1=$(port) NG_PG2=$(port)
mkdir -p "$TMP/nginx-tmp"
cat >"$TMP/nginx.conf" <<NGINX
worker_processes 2; pid $TMP/nginx.pid; error_log $TMP/nginx.err warn; daemon on;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx-tmp/cb; proxy_temp_path $TMP/nginx-tmp/pt; fastcgi_temp_path $TMP/nginx-tmp/ft;
    uwsgi_temp_path $TMP/nginx-tmp/ut; scgi_temp_path $TMP/nginx-tmp/st;
    upstream sqlite { server 127.0.0.1:$SQ_PORT; keepalive 64; }
    upstream pg1 { server 127.0.0.1:$P1_PORT; keepalive 64; }
    upstream pg2 { server 127.0.0.1:$P1_PORT; server 127.0.0.1:$P2_PORT; keepalive 64; }
    proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering on; proxy_buffers 16 16k;
    server { listen 127.0.0.1:$NG_SQ; location / { proxy_pass http://sqlite; } }
    server { listen 127.0.0.1:$NG_PG1; location / { proxy_pass http://pg1; } }
    server { listen 127.0.0.1:$NG_PG2; location / { proxy_pass http://pg2; } }
}
NGINX
nginx -p "$TMP" -c "$TMP/nginx.conf"
NGINX=1

for store in sqlite pg1; do
    cat >"$TMP/rotate-$store.lua" <<LUA
local tokens = {}
for line in io.lines("$TMP/tokens-$store.txt") do tokens[#tokens + 1] = line end
request = function()
  return wrk.format("GET", "/api/v1/pods", { ["Authorization"] = "Bearer " .. tokens[math.random(#tokens)] })
end
LUA
done
check_list() { # base tokens-file: one user's list has $PODS_PER_USER pods
    local n
    n=$(curl -sf "$1/api/v1/pods" -H "authorization: Bearer $(head -1 "$2")" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["pods"]))')
    [[ $n -eq $PODS_PER_USER ]] || { echo "$1 listed $n pods, expected $PODS_PER_USER" >&2; exit 1; }
}

ROWS=()
run_wrk() { # label conns url [lua]
    local out threads=$(( $2 > 1 ? 2 : 1 )) script=()
    [[ -n ${4:-} ]] && script=(-s "$4")
    echo "wrk: $1, $2 connection(s), $DURATION..."
    out=$(wrk -t"$threads" -c"$2" -d"$DURATION" --latency "${script[@]}" "$3")
    echo "$out" >>"$TMP/wrk.log"
    local bad; bad=$(sed -n 's/.*Non-2xx or 3xx responses: *//p' <<<"$out")
    ROWS+=("$1|$2|$(awk '
        function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /m$/) return v*60000; return v*1000 }
        /^Requests\/sec:/ { rps = $2 }  $1 == "50%" { p50 = ms($2) }  $1 == "99%" { p99 = ms($2) }
        END { printf "%s|%.2f|%.2f", rps, p50, p99 }' <<<"$out")|${bad:-0}")
}
measure() { # cache label
    for c in 1 64; do
        run_wrk "SQLite, 1 server, $1" "$c" "http://127.0.0.1:$NG_SQ/api/v1/pods" "$TMP/rotate-sqlite.lua"
        run_wrk "PostgreSQL, 1 server, $1" "$c" "http://127.0.0.1:$NG_PG1/api/v1/pods" "$TMP/rotate-pg1.lua"
        run_wrk "PostgreSQL, 2 servers, $1" "$c" "http://127.0.0.1:$NG_PG2/api/v1/pods" "$TMP/rotate-pg1.lua"
    done
}
for base in "http://127.0.0.1:$NG_SQ" "http://127.0.0.1:$NG_PG1" "http://127.0.0.1:$NG_PG2"; do
    check_list "$base" "$TMP/tokens-$([[ $base == *$NG_SQ ]] && echo sqlite || echo pg1).txt"
done
for c in 1 64; do run_wrk "healthz via nginx (ref)" "$c" "http://127.0.0.1:$NG_PG2/healthz"; done
measure "cache 1 s"
stop_all
start_all 0
check_list "http://127.0.0.1:$NG_PG2" "$TMP/tokens-pg1.txt"
measure "no cache"

echo
echo "GET /api/v1/pods through nginx, $((USERS * PODS_PER_USER)) pods / $USERS users per store, $PODS_PER_USER pods per response,"
echo "a random user's API token per request; wrk $DURATION per row on loopback, $(nproc) CPUs shared by wrk, nginx,"
echo "the servers, PostgreSQL and Redis"
printf '%-36s %6s %10s %9s %9s %8s\n' case conns req/s p50_ms p99_ms non2xx
for row in "${ROWS[@]}"; do
    IFS='|' read -r label conns rps p50 p99 bad <<<"$row"
    printf '%-36s %6s %10s %9s %9s %8s\n' "$label" "$conns" "$rps" "$p50" "$p99" "$bad"
done
