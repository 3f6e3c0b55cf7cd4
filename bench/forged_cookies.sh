#!/usr/bin/env bash
# A flood of made-up session cookies against a signed-in user (issue 19):
# signed-in p99 while the flood runs, against the same gateway idle, and
# the store commands the flood caused (the target is zero: a made-up token
# is refused on its seal, in memory).
#
#   bench/forged_cookies.sh        # about 1 minute
#
# Environment: DURATION (10s), CONNS (32, signed-in), FLOOD_CONNS (8),
# BASE_PORT (18500), KEEP=1 to keep the temp directory, REL (the release
# binaries, default target/release), BUILD=0 to use them as they are.
#
# The gateway runs on a private redis-server (started here, on a free
# port), so that every store command it makes is counted by Redis itself
# (`INFO stats`: total_commands_processed) and nothing else adds to it.
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
FLOOD_CONNS=${FLOOD_CONNS:-8}
BASE_PORT=${BASE_PORT:-18500}
PASSWORD='bench-password-123'
REL=${REL:-target/release}
FOREIGN_MAX=${FOREIGN_MAX:-100}
RETRIES=0

# shellcheck source=bench/lib.sh
source bench/lib.sh

command -v wrk >/dev/null || { echo "wrk is missing (apt-get install wrk)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is missing" >&2; exit 1; }

log "building"
if [[ ${BUILD:-1} != 0 ]]; then
    cargo build --profile bench -p signoff-server --bin signoff --examples
fi

UP=$((BASE_PORT + 1))
REDIS=$((BASE_PORT + 2))
GW=$((BASE_PORT + 3))
start redis redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no
start upstream "$REL/examples/bench_upstream" "127.0.0.1:$UP" text/html
for _ in $(seq 1 50); do redis-cli -p "$REDIS" ping >/dev/null 2>&1 && break; sleep 0.1; done
wait_http "$UP" /
DB="redis://127.0.0.1:$REDIS"
printf '%s\n' "$PASSWORD" | "$REL/signoff" user add bench --password-stdin --db "$DB" >&2
start gateway "$REL/signoff" serve --upstream "http://127.0.0.1:$UP" --listen "127.0.0.1:$GW" --db "$DB"
PID_gw=$LAST_PID
wait_http "$GW" /.signoff/healthz
login "http://127.0.0.1:$GW" bench "$PASSWORD"

commands() { redis-cli -p "$REDIS" info stats | awk -F: '/^total_commands_processed/ { print $2 + 0 }'; }
WRK=(-t1 "-c$CONNS" "-d$DURATION" --latency)

log "warm-up"
wrk -t1 "-c$CONNS" -d2s -H "$COOKIE" "http://127.0.0.1:$GW/" >/dev/null

log "signed-in, idle"
before=$(commands)
RETRIES=0 wrk_run idle "$PID_gw" gw "${WRK[@]}" -H "$COOKIE" "http://127.0.0.1:$GW/"
SIGNED_IN_COMMANDS=$(($(commands) - before))

log "made-up cookies alone"
before=$(commands)
wrk -t1 "-c$FLOOD_CONNS" "-d$DURATION" -s bench/forged_cookies.lua \
    "http://127.0.0.1:$GW/" >"$TMP/flood-alone.txt" 2>&1
ALONE_COMMANDS=$(($(commands) - before))
ALONE_REQS=$(awk '/requests in/ { print $1 }' "$TMP/flood-alone.txt")

log "signed-in, during a flood of made-up cookies ($FLOOD_CONNS connections)"
before=$(commands)
flood_secs=$((${DURATION%s} + 2))
wrk -t1 "-c$FLOOD_CONNS" "-d${flood_secs}s" -s bench/forged_cookies.lua \
    "http://127.0.0.1:$GW/" >"$TMP/flood.txt" 2>&1 &
FLOOD_PID=$!
PIDS+=("$FLOOD_PID")
sleep 1
RETRIES=0 wrk_run busy "$PID_gw" gw "${WRK[@]}" -H "$COOKIE" "http://127.0.0.1:$GW/"
wait "$FLOOD_PID" || true
after=$(commands)
FLOOD_REQS=$(awk '/requests in/ { print $1 }' "$TMP/flood.txt")
FLOOD_RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$TMP/flood.txt")
FLOOD_NON2XX=$(awk '/Non-2xx/ { print $NF }' "$TMP/flood.txt")

idle_p99=$(mean idle 4)
busy_p99=$(mean busy 4)
{
    echo "| figure | value |"
    echo "|---|---|"
    echo "| made-up cookies sent / refused (non-2xx) | $FLOOD_REQS / ${FLOOD_NON2XX:-0} (${FLOOD_RPS} req/s) |"
    echo "| Redis commands: $DURATION of signed-in load alone | $SIGNED_IN_COMMANDS |"
    echo "| Redis commands: $DURATION of made-up cookies alone ($ALONE_REQS requests) | $ALONE_COMMANDS |"
    echo "| Redis commands: both at once | $((after - before)) |"
    echo "| signed-in p99 idle / during the flood (ms) | $idle_p99 / $busy_p99 ($(ratio "$busy_p99" "$idle_p99")x) |"
    printf '| signed-in req/s idle / during the flood | %.0f / %.0f |\n' "$(mean idle 2)" "$(mean busy 2)"
} | tee target/bench-forged-cookies.md
