#!/usr/bin/env bash
# Load benchmark of the gateway's hot path, against a bare hyper reverse
# proxy measured in the same run (see the table it prints). Its last row,
# the floor, is the gateway proxying a public path (no session looked up,
# no guard, no info line): what its HTTP stack and proxy cost alone.
#
#   bench/load.sh            # about 7 minutes on 2 cores
#
# Environment: DURATION (per wrk run, default 10s), CONNS (32), ROUNDS (2),
# SESSIONS (100000), FLOOD_CONNS (64), FLOOD_SECS (length of the login
# flood, default DURATION + 2 s), FLOOD_AFTER (seconds to watch RSS fall
# after the flood, default 60), BASE_PORT (18400), FOREIGN_MAX (10),
# RETRIES (2), QUIET_WAIT (60), KEEP=1 to keep the temp directory (logs,
# databases, raw wrk output), PARTS (which parts to run, default
# "throughput flood rss"), REL (where the release binaries are, default
# $CARGO_TARGET_DIR/release or target/release), BUILD=0 to use them as they
# are, SMAPS=FILE to keep the memory part's /proc/PID/smaps of the gateway
# with all sessions cached.
#
# Everything runs on this machine: wrk, the upstream, the proxies share the
# CPUs, so compare ratios, not absolute figures, across machines. Other
# work on the machine (a build) skews them: each run reports the share of
# the machine used by processes outside the benchmark, and runs above
# FOREIGN_MAX % are repeated once things are quiet.
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-2}
SESSIONS=${SESSIONS:-100000}
BASE_PORT=${BASE_PORT:-18400}
FLOOD_CONNS=${FLOOD_CONNS:-64}
PASSWORD='bench-password-123'
REL=${REL:-${CARGO_TARGET_DIR:-target}/release}
OUT=target/bench-load.md
PARTS=" ${PARTS:-throughput flood rss} "
part() { [[ $PARTS == *" $1 "* ]]; }

# shellcheck source=bench/lib.sh
source bench/lib.sh

if [[ ${BUILD:-1} != 0 ]]; then
    log "building"
    cargo build --profile bench -p signoff-server --bin signoff --examples
fi

UP_HTML=$((BASE_PORT + 1))
UP_PLAIN=$((BASE_PORT + 2))
BARE=$((BASE_PORT + 3))
GW_INFO=$((BASE_PORT + 10))
GW_WARN=$((BASE_PORT + 11))
GW_NOGUARD=$((BASE_PORT + 12))
GW_PLAIN=$((BASE_PORT + 13))
GW_FLOOD=$((BASE_PORT + 14))
GW_RSS=$((BASE_PORT + 15))
GW_FLOOR=$((BASE_PORT + 16))
PORT_gw_info=$GW_INFO
PORT_gw_warn=$GW_WARN
PORT_gw_noguard=$GW_NOGUARD
PORT_gw_plain=$GW_PLAIN
PORT_gw_floor=$GW_FLOOR

# gateway NAME PORT UPSTREAM_PORT DB [FLAGS...]; env SIGNOFF_LOG passes through.
gateway() {
    local name=$1 port=$2 up=$3 db=$4
    shift 4
    start "$name" "$REL/signoff" serve --upstream "http://127.0.0.1:$up" \
        --listen "127.0.0.1:$port" --db "sqlite://$db" "$@"
    eval "PID_$name=$LAST_PID"
    wait_http "$port" /.signoff/healthz
}

# --- set-up ---------------------------------------------------------------
log "starting the upstreams, the bare proxy and the gateways"
start upstream-html "$REL/examples/bench_upstream" "127.0.0.1:$UP_HTML" text/html
start upstream-plain "$REL/examples/bench_upstream" "127.0.0.1:$UP_PLAIN" text/plain
start bare "$REL/examples/bare_proxy" "127.0.0.1:$BARE" "127.0.0.1:$UP_HTML"
PID_bare=$LAST_PID
wait_http "$UP_HTML" /
wait_http "$UP_PLAIN" /
wait_http "$BARE" /

DB="$TMP/bench.db"
printf '%s\n' "$PASSWORD" | "$REL/signoff" user add bench --password-stdin --db "sqlite://$DB" >&2

gateway gw_info "$GW_INFO" "$UP_HTML" "$DB"
SIGNOFF_LOG=warn gateway gw_warn "$GW_WARN" "$UP_HTML" "$DB"
SIGNOFF_LOG=warn gateway gw_noguard "$GW_NOGUARD" "$UP_HTML" "$DB" --inject-guard false
SIGNOFF_LOG=warn gateway gw_plain "$GW_PLAIN" "$UP_PLAIN" "$DB"
gateway gw_flood "$GW_FLOOD" "$UP_HTML" "$DB" --trusted-proxy 127.0.0.1
# The floor: signoff's HTTP stack and proxy with none of the work a signed-in
# request adds (a public path: no session looked up, so no guard; no info
# line), in front of the bare proxy's upstream.
SIGNOFF_LOG=warn gateway gw_floor "$GW_FLOOR" "$UP_HTML" "$DB" --public-path /

log "logging in"
login "http://127.0.0.1:$GW_INFO" bench "$PASSWORD"
# The session works on every gateway (one database); check each.
for port in "$GW_INFO" "$GW_WARN" "$GW_NOGUARD" "$GW_PLAIN" "$GW_FLOOD"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "$COOKIE" "http://127.0.0.1:$port/")
    if [[ $code != 200 ]]; then
        echo "authenticated GET on port $port answered $code" >&2
        exit 1
    fi
done
curl -s -H "$COOKIE" "http://127.0.0.1:$GW_INFO/" >"$TMP/page-guarded.html"
curl -s -H "$COOKIE" "http://127.0.0.1:$GW_NOGUARD/" >"$TMP/page-plain.html"
echo "page bytes: bare $(curl -s "http://127.0.0.1:$BARE/" | wc -c), gateway+guard $(wc -c <"$TMP/page-guarded.html"), gateway no guard $(wc -c <"$TMP/page-plain.html")" >&2

WRK=(-t2 "-c$CONNS" "-d$DURATION" --latency)

# --- throughput and latency -------------------------------------------------
if part throughput; then
wait_quiet "${QUIET_WAIT:-60}"
log "warm-up (2 s each)"
for port in "$BARE" "$GW_INFO" "$GW_WARN" "$GW_NOGUARD" "$GW_PLAIN" "$GW_FLOOR"; do
    wrk -t2 "-c$CONNS" -d2s -H "$COOKIE" "http://127.0.0.1:$port/" >/dev/null
done

log "throughput: $ROUNDS rounds, each gateway run right after a bare proxy run, $DURATION each, $CONNS connections"
for round in $(seq 1 "$ROUNDS"); do
    echo "-- round $round" >&2
    for gw in gw_info gw_warn gw_noguard gw_plain gw_floor; do
        wrk_run bare "$PID_bare" bare "${WRK[@]}" "http://127.0.0.1:$BARE/"
        port_var="PORT_$gw"
        pid_var="PID_$gw"
        wrk_run "$gw" "${!pid_var}" "$gw" "${WRK[@]}" -H "$COOKIE" "http://127.0.0.1:${!port_var}/"
    done
done

fi

# --- login flood ------------------------------------------------------------
if part flood; then
log "login flood: idle, then $FLOOD_CONNS connections of failing logins"
FLOOD_RSS0=$(rss_kb "$PID_gw_flood")
wrk_run flood_idle "$PID_gw_flood" gw_flood "${WRK[@]}" -H "$COOKIE" "http://127.0.0.1:$GW_FLOOD/"
flood_secs=${FLOOD_SECS:-$((${DURATION%s} + 2))}
ORIGIN="http://127.0.0.1:$GW_FLOOD" wrk -t2 "-c$FLOOD_CONNS" "-d${flood_secs}s" --timeout 30s \
    -s bench/login_flood.lua "http://127.0.0.1:$GW_FLOOD/" >"$TMP/flood.txt" 2>&1 &
FLOOD_PID=$!
PIDS+=("$FLOOD_PID")
sleep 1
RETRIES=0 wrk_run flood_busy "$PID_gw_flood" gw_flood "${WRK[@]}" -H "$COOKIE" "http://127.0.0.1:$GW_FLOOD/"
wait "$FLOOD_PID" || true
FLOOD_RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$TMP/flood.txt")
FLOOD_CODES=$(sed -n 's/^status codes: //p' "$TMP/flood.txt")
FLOOD_AVG=$(to_ms "$(awk '$1 == "Latency" && NF > 2 { print $2 }' "$TMP/flood.txt")")
echo "flood: $FLOOD_RPS attempts/s, codes: $FLOOD_CODES, mean login latency $FLOOD_AVG ms" >&2
FLOOD_RSS=$(rss_kb "$PID_gw_flood")
FLOOD_HWM=$(hwm_kb "$PID_gw_flood")
# Then idle: how soon the memory goes back.
FLOOD_AFTER_ROWS=""
after=0
while ((after < ${FLOOD_AFTER:-60})); do
    sleep 10
    after=$((after + 10))
    FLOOD_AFTER_ROWS+=" ${after}s: $(mb "$(rss_kb "$PID_gw_flood")")"
done
echo "RSS after the flood, MB:$FLOOD_AFTER_ROWS" >&2
fi

# --- memory with many sessions ------------------------------------------------
if part rss; then

log "RSS: seeding $SESSIONS sessions"
RSS_DB="$TMP/rss.db"
printf '%s\n' "$PASSWORD" | "$REL/signoff" user add bench --password-stdin --db "sqlite://$RSS_DB" >&2
"$REL/examples/seed_sessions" "$RSS_DB" bench "$SESSIONS" "$TMP/tokens.txt" >&2
gateway gw_rss "$GW_RSS" "$UP_HTML" "$RSS_DB" --metrics
sleep 1
RSS_ROWS="| after start-up, none cached | $(mb "$(rss_kb "$PID_gw_rss")") | $(rss_split "$PID_gw_rss") | |"$'\n'
HOT=$((SESSIONS < 5000 ? SESSIONS : 5000))
TOKENS="$TMP/tokens.txt" TOKEN_COUNT=$HOT WRK_THREADS=2 \
    wrk_run rss_hot "$PID_gw_rss" gw_rss "${WRK[@]}" -s bench/sessions.lua "http://127.0.0.1:$GW_RSS/"
RSS_ROWS+="| $DURATION cycling over $HOT sessions (all cached) | $(mb "$(rss_kb "$PID_gw_rss")") | $(rss_split "$PID_gw_rss") | $(printf %.0f "$(mean rss_hot 2)") req/s, p99 $(mean rss_hot 4) ms |"$'\n'
# Then every session once, from a single wrk thread so it can tell where
# it stopped (at most RSS_FILL_RUNS runs): each request is a cache miss.
offset=$HOT
seen=$HOT
fills=0
while ((offset < SESSIONS && fills < ${RSS_FILL_RUNS:-8})); do
    fills=$((fills + 1))
    TOKENS="$TMP/tokens.txt" TOKEN_COUNT=0 WRK_THREADS=1 TOKEN_OFFSET=$offset RETRIES=0 \
        wrk_run rss_fill "$PID_gw_rss" gw_rss -t1 "-c$CONNS" "-d$DURATION" --latency \
        -s bench/sessions.lua "http://127.0.0.1:$GW_RSS/"
    sent=$(sed -n 's/^tokens sent per thread: //p' "$LAST_WRK")
    offset=$((offset + sent))
    seen=$((offset < SESSIONS ? offset : SESSIONS))
    echo "  $seen of $SESSIONS sessions seen, RSS $(mb "$(rss_kb "$PID_gw_rss")") MB" >&2
done
if ((fills > 0)); then
    RSS_ROWS+="| after first requests of $seen sessions (each a cache miss) | $(mb "$(rss_kb "$PID_gw_rss")") | $(rss_split "$PID_gw_rss") | $(printf %.0f "$(mean rss_fill 2)") req/s, p99 $(mean rss_fill 4) ms |"$'\n'
fi
RSS_HWM=$(hwm_kb "$PID_gw_rss")
# SMAPS=FILE: keep the gateway's memory map at this point, to see where
# the memory is (docs/benchmarks.md reads it by mapping).
if [[ -n ${SMAPS:-} ]]; then
    cp "/proc/$PID_gw_rss/smaps" "$SMAPS"
fi
RSS_ROWS+="| peak (VmHWM) | $(mb "$RSS_HWM") | | |"$'\n'
CACHED=$(curl -s "http://127.0.0.1:$GW_RSS/.signoff/metrics" | awk '$1 == "signoff_session_cache_entries" { print $2 }')
RSS_ROWS+="| sessions in the cache at the end | ${CACHED:-?} | | |"
fi

# --- summary ------------------------------------------------------------------
row() {
    local label=$1 text=$2
    printf '| %s | %.0f | %.3f | %.3f | %sx | %s | %.1f | %s |\n' "$text" \
        "$(mean "$label" 2)" "$(mean "$label" 3)" "$(mean "$label" 4)" \
        "$(paired_ratio "$label")" "$(paired_p99 "$label")" "$(mean "$label" 6)" "$(maxf "$label" 7)"
}

{
    echo "## signoff load benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, wrk -t2 -c$CONNS -d$DURATION, $ROUNDS rounds, means; parts:$PARTS)"
    echo
    if part throughput; then
        gw_ratio=$(paired_ratio gw_info)
        gw_added=$(paired_p99 gw_info)
        echo "Ratios and added p99 pair each gateway run with the bare proxy run just before it."
        echo
        echo "| Setup | req/s | p50 ms | p99 ms | req/s vs bare | p99 added ms | proxy CPU us/req | other load % (max) |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|"
        printf '| bare hyper proxy (baseline) | %.0f | %.3f | %.3f | 1.00x | 0 | %.1f | %s |\n' \
            "$(mean bare 2)" "$(mean bare 3)" "$(mean bare 4)" "$(mean bare 6)" "$(maxf bare 7)"
        row gw_info "signoff, default (info access log, guard injected)"
        row gw_warn "signoff, SIGNOFF_LOG=warn, guard injected"
        row gw_noguard "signoff, SIGNOFF_LOG=warn, --inject-guard false"
        row gw_plain "signoff, SIGNOFF_LOG=warn, upstream text/plain"
        row gw_floor "floor: signoff, SIGNOFF_LOG=warn, public path (no session, no guard)"
        echo
    fi
    if part flood; then
        idle_p99=$(mean flood_idle 4)
        busy_p99=$(mean flood_busy 4)
        echo "| Login flood ($FLOOD_CONNS conns for ${flood_secs}s, random user + X-Forwarded-For) | value |"
        echo "|---|---:|"
        echo "| authenticated p99 idle / during flood (ms) | $idle_p99 / $busy_p99 |"
        echo "| authenticated p50 idle / during flood (ms) | $(mean flood_idle 3) / $(mean flood_busy 3) |"
        printf '| authenticated req/s idle / during flood | %.0f / %.0f |\n' "$(mean flood_idle 2)" "$(mean flood_busy 2)"
        echo "| failing logins/s achieved (mean login latency) | $FLOOD_RPS ($FLOOD_AVG ms) |"
        echo "| login status codes | ${FLOOD_CODES:-n/a} |"
        echo "| gateway RSS before / after the flood (peak) | $(mb "$FLOOD_RSS0") / $(mb "$FLOOD_RSS") ($(mb "$FLOOD_HWM")) MB |"
        echo "| gateway RSS while idle after the flood (MB) |$FLOOD_AFTER_ROWS |"
        echo
    fi
    if part rss; then
        echo "| RSS, $SESSIONS sessions in the store | MB | of which anonymous / mapped files, MB | load |"
        echo "|---|---:|---:|---|"
        echo "$RSS_ROWS"
        echo
    fi
    echo "| Target | measured | result |"
    echo "|---|---:|---|"
    if part throughput; then
        echo "| req/s >= 0.85x bare (default config) | ${gw_ratio}x | $(pass "$gw_ratio >= 0.85") |"
        echo "| added p99 <= 0.3 ms (default config) | $gw_added ms | $(pass "$gw_added <= 0.3") |"
    fi
    if part flood; then
        echo "| p99 during flood <= 5x idle | $(ratio "$busy_p99" "$idle_p99")x | $(pass "$busy_p99 <= 5 * $idle_p99") |"
        echo "| RSS <= 80 MB after the login flood (peak) | $(mb "$FLOOD_RSS") ($(mb "$FLOOD_HWM")) MB | $(pass "$FLOOD_HWM <= 80 * 1024") |"
        echo "| RSS < 40 MB within a minute after the flood | $(mb "$(rss_kb "$PID_gw_flood")") MB | $(pass "$(rss_kb "$PID_gw_flood") < 40 * 1024") |"
    fi
    if part rss; then
        echo "| RSS <= 40 MB, $SESSIONS sessions in the store (${CACHED:-?} cached) | $(mb "$RSS_HWM") MB peak | $(pass "$RSS_HWM <= 40 * 1024") |"
    fi
} >"$TMP/summary.md"
mkdir -p target
cp "$TMP/summary.md" "$OUT"
echo
cat "$OUT"
echo
echo "(written to $OUT)"
