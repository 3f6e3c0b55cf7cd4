#!/usr/bin/env bash
# Proxied throughput with a bearer access token (token mode) against the
# same gateway with a session cookie, measured in the same run: each bearer
# run right after a cookie run, same upstream, same connections.
#
#   bench/bearer.sh            # about 2 minutes on 2 cores
#
# Environment: DURATION (per wrk run, default 10s), CONNS (32), ROUNDS (3),
# BASE_PORT (18600), FOREIGN_MAX (10), RETRIES (2), QUIET_WAIT (60), KEEP=1
# to keep the temp directory. Needs wrk, curl and python3.
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-3}
BASE_PORT=${BASE_PORT:-18600}
PASSWORD='bench-password-123'
REL=target/release
OUT=target/bench-bearer.md

for tool in wrk curl python3; do
    command -v "$tool" >/dev/null || {
        echo "$tool is needed (apt-get install wrk curl python3)" >&2
        exit 1
    }
done

# shellcheck source=bench/lib.sh
source bench/lib.sh

log "building"
cargo build --profile bench -p signoff-server --bin signoff --examples

UP=$((BASE_PORT + 1))
GW=$((BASE_PORT + 2))
start upstream "$REL/examples/bench_upstream" "127.0.0.1:$UP" text/plain
wait_http "$UP" /
DB="$TMP/bench.db"
printf '%s\n' "$PASSWORD" | "$REL/signoff" user add bench --password-stdin --db "sqlite://$DB" >&2
SIGNOFF_LOG=warn start gw "$REL/signoff" serve --upstream "http://127.0.0.1:$UP" \
    --listen "127.0.0.1:$GW" --db "sqlite://$DB" --tokens --access-token-ttl 1h
PID_gw=$LAST_PID
wait_http "$GW" /.signoff/healthz

log "signing in: a browser session (cookie) and an API session (bearer)"
login "http://127.0.0.1:$GW" bench "$PASSWORD"
ACCESS=$(curl -s -X POST -H 'Content-Type: application/json' \
    --data "{\"username\":\"bench\",\"password\":\"$PASSWORD\"}" \
    "http://127.0.0.1:$GW/.signoff/api/login" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
BEARER="Authorization: Bearer $ACCESS"
for header in "$COOKIE" "$BEARER"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "$header" "http://127.0.0.1:$GW/")
    [[ $code == 200 ]] || { echo "authenticated GET answered $code" >&2; exit 1; }
done

WRK=(-t2 "-c$CONNS" "-d$DURATION" --latency)
wait_quiet "${QUIET_WAIT:-60}"
wrk -t2 "-c$CONNS" -d2s -H "$COOKIE" "http://127.0.0.1:$GW/" >/dev/null
wrk -t2 "-c$CONNS" -d2s -H "$BEARER" "http://127.0.0.1:$GW/" >/dev/null
for round in $(seq 1 "$ROUNDS"); do
    echo "-- round $round" >&2
    # `bare_…` marks the baseline: paired_ratio divides by the run before.
    wrk_run bare_cookie "$PID_gw" gw "${WRK[@]}" -H "$COOKIE" "http://127.0.0.1:$GW/"
    wrk_run bearer "$PID_gw" gw "${WRK[@]}" -H "$BEARER" "http://127.0.0.1:$GW/"
done

{
    echo "| credential | req/s | p99 ms | CPU us/req | ratio to cookie (paired) |"
    echo "|---|---|---|---|---|"
    printf '| cookie | %.0f | %s | %s | 1.00 |\n' "$(mean bare_cookie 2)" "$(mean bare_cookie 4)" "$(mean bare_cookie 6)"
    printf '| bearer JWT | %.0f | %s | %s | %s |\n' "$(mean bearer 2)" "$(mean bearer 4)" "$(mean bearer 6)" "$(paired_ratio bearer)"
    echo
    echo "target: bearer >= 0.9x cookie: $(pass "$(paired_ratio bearer) >= 0.9")"
} | tee "$OUT"
