#!/usr/bin/env bash
# Gateway throughput on the shared stores, warm caches, against the SQLite
# gateway measured in the same run (issue 4's figure: Redis >= 0.9x SQLite).
#
#   bench/multinode.sh       # about 2 minutes after the release build
#
# Environment: DURATION (per wrk run, default 10s), CONNS (32), ROUNDS (3),
# BASE_PORT (18600), REDIS (redis://127.0.0.1:6379), POSTGRES
# (postgres://postgres@127.0.0.1:5432/test), KEEP=1 to keep logs.
# Two nodes per shared store, one session, wrk against node A and node B
# alternately; each store run right after a SQLite run.
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-3}
BASE_PORT=${BASE_PORT:-18600}
REDIS=${REDIS:-redis://127.0.0.1:6379}
POSTGRES=${POSTGRES:-postgres://postgres@127.0.0.1:5432/test}
PASSWORD='bench-password-123'
REL=target/release

# shellcheck source=bench/lib.sh
source bench/lib.sh

log "building"
cargo build --profile bench -p signoff-server --bin signoff --examples

UP=$((BASE_PORT + 1))
start upstream "$REL/examples/bench_upstream" "127.0.0.1:$UP" text/plain
wait_http "$UP" /

NAME="bench$RANDOM$RANDOM"
declare -A DBS=(
    [sqlite]="sqlite://$TMP/bench.db"
    [redis]="$REDIS?prefix=signoff-$NAME"
    [postgres]="$POSTGRES?schema=signoff_$NAME"
)
port=$((BASE_PORT + 10))
declare -A PORTS PID
for store in sqlite redis postgres; do
    printf '%s\n' "$PASSWORD" | "$REL/signoff" user add bench --password-stdin --db "${DBS[$store]}" >&2
    for node in a b; do
        SIGNOFF_LOG=warn start "$store-$node" "$REL/signoff" serve --upstream "http://127.0.0.1:$UP" \
            --listen "127.0.0.1:$port" --db "${DBS[$store]}"
        PID[$store-$node]=$LAST_PID
        PORTS[$store-$node]=$port
        wait_http "$port" /.signoff/healthz
        port=$((port + 1))
    done
done

declare -A COOKIES
for store in sqlite redis postgres; do
    login "http://127.0.0.1:${PORTS[$store-a]}" bench "$PASSWORD"
    COOKIES[$store]=$COOKIE
    for node in a b; do
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "$COOKIE" "http://127.0.0.1:${PORTS[$store-$node]}/")
        [[ $code == 200 ]] || { echo "$store-$node answered $code" >&2; exit 1; }
    done
done

WRK=(-t2 "-c$CONNS" "-d$DURATION" --latency)
wait_quiet "${QUIET_WAIT:-30}"
for store in sqlite redis postgres; do
    for node in a b; do
        wrk -t2 "-c$CONNS" -d2s -H "${COOKIES[$store]}" "http://127.0.0.1:${PORTS[$store-$node]}/" >/dev/null
    done
done
for round in $(seq 1 "$ROUNDS"); do
    echo "-- round $round" >&2
    node=$([[ $((round % 2)) == 1 ]] && echo a || echo b)
    for store in redis postgres; do
        wrk_run sqlite "${PID[sqlite-$node]}" sqlite "${WRK[@]}" -H "${COOKIES[sqlite]}" "http://127.0.0.1:${PORTS[sqlite-$node]}/"
        wrk_run "$store" "${PID[$store-$node]}" "$store" "${WRK[@]}" -H "${COOKIES[$store]}" "http://127.0.0.1:${PORTS[$store-$node]}/"
    done
done

sq=$(mean sqlite 2)
{
    echo "| store (warm caches) | req/s | ratio to SQLite | p99 ms |"
    echo "|---|---|---|---|"
    for store in sqlite redis postgres; do
        rps=$(mean "$store" 2)
        printf '| %s | %.0f | %.2f | %s |\n' "$store" "$rps" "$(awk -v a="$rps" -v b="$sq" 'BEGIN { print a / b }')" "$(mean "$store" 4)"
    done
} | tee target/bench-multinode.md
redis-cli -u "$REDIS" --scan --pattern "signoff-$NAME:*" | xargs -r redis-cli -u "$REDIS" unlink >/dev/null || true
psql "$POSTGRES" -q -c "DROP SCHEMA IF EXISTS signoff_$NAME CASCADE" || true
