#!/usr/bin/env bash
# Two builds of `signoff serve` in the same run, each right after the
# bare hyper proxy of bench/load.sh: an authenticated GET of the same
# small HTML page (examples/bench_upstream.rs), default settings (access
# log on, guard injected), wrk -t2 -c32. Use it to show what a change
# does: the bare proxy's own rate moves by several per cent between runs
# on a shared machine, so compare the two builds' CPU per request and
# req/s round by round, not ratios taken on different days.
#
#   git worktree add /tmp/before HEAD~1
#   (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before-target \
#       cargo build --profile bench -p signoff-server --bin signoff)
#   cargo build --profile bench -p signoff-server --bin signoff --examples
#   bench/before_after.sh /tmp/before-target/release target/release
#
# About 2 minutes once built (less than a minute with DURATION=3s ROUNDS=1).
#
# Arguments: the directories holding the `signoff` binaries before and
# after. The bare proxy and the upstream come from target/release/examples.
# Environment: DURATION (per wrk run, default 8s), ROUNDS (3), KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=${1:?the directory of the signoff binary before the change}
AFTER=${2:?the directory of the signoff binary after the change}
DURATION=${DURATION:-8s}
ROUNDS=${ROUNDS:-3}
PASSWORD='bench-password-123'
REL=target/release

# shellcheck source=bench/lib.sh
source bench/lib.sh

UP=$(free_port)
BARE=$(free_port)
GW_BEFORE=$(free_port)
GW_AFTER=$(free_port)

log "starting the upstream, the bare proxy and both builds (one database)"
start upstream "$REL/examples/bench_upstream" "127.0.0.1:$UP" text/html
start bare "$REL/examples/bare_proxy" "127.0.0.1:$BARE" "127.0.0.1:$UP"
PID_bare=$LAST_PID
DB="$TMP/bench.db"
printf '%s\n' "$PASSWORD" | "$AFTER/signoff" user add bench --password-stdin --db "sqlite://$DB" >&2
start before "$BEFORE/signoff" serve --upstream "http://127.0.0.1:$UP" \
    --listen "127.0.0.1:$GW_BEFORE" --db "sqlite://$DB"
PID_before=$LAST_PID
start after "$AFTER/signoff" serve --upstream "http://127.0.0.1:$UP" \
    --listen "127.0.0.1:$GW_AFTER" --db "sqlite://$DB"
PID_after=$LAST_PID
for port in "$UP" "$BARE"; do wait_http "$port" /; done
for port in "$GW_BEFORE" "$GW_AFTER"; do wait_http "$port" /.signoff/healthz; done
login "http://127.0.0.1:$GW_AFTER" bench "$PASSWORD"
for port in "$GW_BEFORE" "$GW_AFTER"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "$COOKIE" "http://127.0.0.1:$port/")
    [[ $code == 200 ]] || { echo "authenticated GET on port $port answered $code" >&2; exit 1; }
done

# one NAME PID PORT [HEADER]: one wrk run; prints "req/s CPU-µs/req p99".
one() {
    local t0 t1 n
    t0=$(cpu_ticks "$2")
    wrk -t2 -c32 "-d$DURATION" --latency ${4:+-H "$4"} "http://127.0.0.1:$3/" >"$TMP/$1.wrk"
    t1=$(cpu_ticks "$2")
    n=$(awk '/requests in/ { print $1 }' "$TMP/$1.wrk")
    awk -v t="$((t1 - t0))" -v n="$n" -v us="$TICK_US" -v rps="$(awk '/^Requests\/sec/ { print $2 }' "$TMP/$1.wrk")" \
        -v p99="$(awk '$1 == "99%" { print $2 }' "$TMP/$1.wrk")" \
        'BEGIN { printf "%.0f %.1f %s", rps, t * us / n, p99 }'
}

for port in "$BARE" "$GW_BEFORE" "$GW_AFTER"; do
    wrk -t2 -c32 -d2s -H "$COOKIE" "http://127.0.0.1:$port/" >/dev/null
done
echo "| round | bare req/s | before req/s (CPU µs/req) | vs bare | bare req/s | after req/s (CPU µs/req) | vs bare | p99: bare, before, bare, after |"
echo "|---|---:|---:|---:|---:|---:|---:|---|"
for round in $(seq 1 "$ROUNDS"); do
    read -r b1 bc1 bp1 <<<"$(one bare1 "$PID_bare" "$BARE")"
    read -r o oc op <<<"$(one before "$PID_before" "$GW_BEFORE" "$COOKIE")"
    read -r b2 bc2 bp2 <<<"$(one bare2 "$PID_bare" "$BARE")"
    read -r a ac ap <<<"$(one after "$PID_after" "$GW_AFTER" "$COOKIE")"
    echo "| $round | $b1 ($bc1) | $o ($oc) | $(ratio "$o" "$b1")× | $b2 ($bc2) | $a ($ac) | $(ratio "$a" "$b2")× | $bp1, $op, $bp2, $ap |"
done
