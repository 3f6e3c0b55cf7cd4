#!/usr/bin/env bash
# What an app pays for signoff's sessions, against the usual axum stack,
# measured in the same run: an authenticated GET /dashboard (the same
# ~1 KB private page, signoff-example's template) from
#   - bare-axum: the page with no session and no auth (the baseline);
#   - signoff-example (examples/axum-app), sessions in SQLite;
#   - axum-login-app: axum-login + tower-sessions with
#     tower-sessions-sqlx-store's SQLite store (bench/axum-login-app,
#     a package of its own, outside the workspace).
# Each signed in once as alice with curl; wrk then replays that cookie.
#
#   bench/library.sh          # about 2 minutes on 2 cores, once built
#
# Environment: DURATION (per wrk run, default 10s), CONNS (32), ROUNDS (2;
# each runs bare, signoff-example, axum-login in turn), FOREIGN_MAX (10),
# RETRIES (2), QUIET_WAIT (60), PIN=1 to run each server on CPU 1 and wrk
# (one thread) on CPU 0, so the load generator does not share the server's
# core (without it, wrk and the server share both), KEEP=1 to keep the temp directory (logs,
# databases, raw wrk output), REL (signoff's release binaries, default
# $CARGO_TARGET_DIR/release or target/release), AL_REL (axum-login-app's,
# default $CARGO_TARGET_DIR/axum-login-app/release), BUILD=0 to use them
# as they are, OUT (where the table is written, default
# $CARGO_TARGET_DIR/bench-library.md).
#
# Everything runs on this machine: wrk and the servers share the CPUs, so
# compare ratios, not absolute figures, across machines; runs during which
# other processes took more than FOREIGN_MAX % of the machine are repeated.
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-2}
PASSWORD='bench-password-123'
TARGET=${CARGO_TARGET_DIR:-target}
REL=${REL:-$TARGET/release}
AL_REL=${AL_REL:-$TARGET/axum-login-app/release}
OUT=${OUT:-$TARGET/bench-library.md}

# shellcheck source=bench/lib.sh
source bench/lib.sh

if [[ ${BUILD:-1} != 0 ]]; then
    log "building"
    cargo build --release -p signoff-server -p signoff-axum-example
    cargo build --release --manifest-path bench/axum-login-app/Cargo.toml \
        --target-dir "$TARGET/axum-login-app"
fi

# serve NAME CMD...: start a server on a free port (it prints "listening
# on http://ADDR" when ready); sets PID_NAME and PORT_NAME.
serve() {
    local name=$1 i port=""
    shift
    start "$name" "$@"
    printf -v "PID_$name" '%s' "$LAST_PID"
    for i in $(seq 1 300); do
        port=$(sed -n 's|.*listening on http://[^ ]*:\([0-9][0-9]*\).*|\1|p' "$TMP/$name.log" | head -n 1)
        [[ -n $port ]] && break
        check_alive "$LAST_PID" "$name"
        sleep 0.1
    done
    if [[ -z $port ]]; then
        echo "$name never said where it listens; $TMP/$name.log:" >&2
        cat "$TMP/$name.log" >&2
        exit 1
    fi
    printf -v "PORT_$name" '%s' "$port"
}

# check_page NAME PORT [HEADER]: GET /dashboard must show alice's page;
# sets PAGE_BYTES (its body's size).
check_page() {
    local page="$TMP/page-$1.html" code
    code=$(curl -s -o "$page" -w '%{http_code}' ${3:+-H "$3"} "http://127.0.0.1:$2/dashboard")
    if [[ $code != 200 ]] || ! grep -q 'Signed in as <strong>alice</strong>' "$page"; then
        echo "$1: GET /dashboard answered $code, not alice's page:" >&2
        head -c 2000 "$page" >&2
        exit 1
    fi
    PAGE_BYTES=$(wc -c <"$page")
}

# sign_in NAME PORT COOKIE_NAME: signs alice in with the form; sets
# COOKIE_NAME (a `Cookie:` header line) and checks the page, or exits.
sign_in() {
    local name=$1 origin="http://127.0.0.1:$2" headers status token
    headers=$(curl -s -o /dev/null -D - -X POST -H "Origin: $origin" \
        --data-urlencode username=alice --data-urlencode "password=$PASSWORD" \
        --data-urlencode next=/dashboard "$origin/login")
    status=$(printf '%s' "$headers" | awk 'NR == 1 { print $2 }')
    token=$(printf '%s' "$headers" | tr -d '\r' | sed -n "s/^[Ss]et-[Cc]ookie: $3=\([^;]*\);.*/\1/p")
    if [[ $status != 303 || -z $token ]]; then
        echo "$name: sign-in failed (status $status):" >&2
        printf '%s\n' "$headers" >&2
        exit 1
    fi
    printf -v "COOKIE_$name" '%s' "Cookie: $3=$token"
    check_page "$name" "$2" "Cookie: $3=$token"
}

# --- set-up ---------------------------------------------------------------
ON_SERVER_CPU=()
WRK_THREADS=2
if [[ ${PIN:-0} == 1 ]]; then
    ON_SERVER_CPU=(taskset -c 1)
    WRK_THREADS=1
    WRK_BIN=$(type -P wrk)
    wrk() { taskset -c 0 "$WRK_BIN" "$@"; }
fi
log "making alice, starting the three servers"
printf '%s\n' "$PASSWORD" | "$REL/signoff" user add alice --password-stdin --db "sqlite://$TMP/app.db" >&2
serve bare "${ON_SERVER_CPU[@]}" "$AL_REL/bare-axum" --listen 127.0.0.1:0
serve signoff "${ON_SERVER_CPU[@]}" "$REL/signoff-example" --listen 127.0.0.1:0 --db "sqlite://$TMP/app.db"
APP_USER=alice APP_PASSWORD=$PASSWORD \
    serve axum_login "${ON_SERVER_CPU[@]}" "$AL_REL/axum-login-app" --listen 127.0.0.1:0 --db "$TMP/sessions.db"

log "signing in"
check_page bare "$PORT_bare"
BARE_BYTES=$PAGE_BYTES
sign_in signoff "$PORT_signoff" signoff
SIGNOFF_BYTES=$PAGE_BYTES
sign_in axum_login "$PORT_axum_login" id
AL_BYTES=$PAGE_BYTES
echo "page bytes: bare $BARE_BYTES, signoff-example $SIGNOFF_BYTES, axum-login $AL_BYTES" >&2
MIN_BYTES=$(printf '%s\n' "$BARE_BYTES" "$SIGNOFF_BYTES" "$AL_BYTES" | sort -n | head -n 1)

WRK=("-t$WRK_THREADS" "-c$CONNS" "-d$DURATION" --latency)
SETUPS=(bare signoff axum_login)
# args NAME: sets ARGS, the cookie (if any) and URL of that server.
args() {
    local port="PORT_$1" cookie="COOKIE_$1"
    ARGS=()
    if [[ -n ${!cookie:-} ]]; then
        ARGS+=(-H "${!cookie}")
    fi
    ARGS+=("http://127.0.0.1:${!port}/dashboard")
}

# --- throughput and latency -------------------------------------------------
wait_quiet "${QUIET_WAIT:-60}"
log "warm-up (2 s each)"
for s in "${SETUPS[@]}"; do
    args "$s"
    wrk "-t$WRK_THREADS" "-c$CONNS" -d2s "${ARGS[@]}" >/dev/null
done

log "throughput: $ROUNDS rounds of bare, signoff-example, axum-login; $DURATION each, $CONNS connections"
for round in $(seq 1 "$ROUNDS"); do
    echo "-- round $round" >&2
    for s in "${SETUPS[@]}"; do
        args "$s"
        pid="PID_$s"
        wrk_run "$s" "${!pid}" "$s" "${WRK[@]}" "${ARGS[@]}"
        got=$(resp_bytes "$LAST_WRK")
        if ((got < MIN_BYTES)); then
            echo "$s: answers averaged $got bytes, less than the $MIN_BYTES-byte page: not the page (signed out?); see $LAST_WRK" >&2
            exit 1
        fi
    done
done
# The sessions still hold after the load.
check_page signoff "$PORT_signoff" "$COOKIE_signoff"
check_page axum_login "$PORT_axum_login" "$COOKIE_axum_login"

# --- summary ------------------------------------------------------------------
# vs_al LABEL: mean over the rounds of LABEL's req/s / axum-login's in the
# same round.
vs_al() {
    awk -v l="$1" '$1 == l { a[++n] = $2 } $1 == "axum_login" { b[++m] = $2 }
        END { for (i = 1; i <= n; i++) s += a[i] / b[i]; printf "%.2f", s / n }' "$TMP/results"
}
row() {
    local label=$1 text=$2
    printf '| %s | %.0f | %.3f | %.3f | %sx | %sx | %.1f | %s |\n' "$text" \
        "$(mean "$label" 2)" "$(mean "$label" 3)" "$(mean "$label" 4)" \
        "$(paired_ratio "$label")" "$(vs_al "$label")" "$(mean "$label" 6)" "$(maxf "$label" 7)"
}
{
    pinned=""
    [[ ${PIN:-0} == 1 ]] && pinned=", each server pinned to CPU 1 and wrk to CPU 0"
    echo "## signoff-example vs axum-login ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, wrk -t$WRK_THREADS -c$CONNS -d$DURATION, $ROUNDS rounds, means$pinned)"
    echo
    echo "Authenticated GET /dashboard, the same page (body bytes: bare $BARE_BYTES, signoff-example $SIGNOFF_BYTES, axum-login $AL_BYTES)."
    echo "Ratios pair the runs of one round (bare, signoff-example, axum-login, in that order)."
    echo
    echo "| Setup | req/s | p50 ms | p99 ms | req/s vs bare | req/s vs axum-login | server CPU us/req | other load % (max) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    row bare "bare axum 0.8, no auth (baseline)"
    row signoff "signoff-example (signoff, SQLite)"
    row axum_login "axum-login 0.18 + tower-sessions 0.14 (SQLite store)"
} >"$TMP/summary.md"
mkdir -p "$(dirname "$OUT")"
cp "$TMP/summary.md" "$OUT"
echo
cat "$OUT"
echo
echo "(written to $OUT)"
