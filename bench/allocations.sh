#!/usr/bin/env bash
# Allocations per request by call site (valgrind's dhat), for an
# authenticated GET /dashboard from bare-axum (bench/axum-login-app, no
# session, no auth) and from signoff-example: where the example's extra
# allocations come from, site by site. Counts do not depend on what else
# the machine does. Sites under 0.05 per request (start-up, timers) are
# summed in the total only. The example's rows from sqlite3 and sqlx are
# the SQLite change log's 10 ms poll: 0.2-0.3 per request at valgrind's
# ~2,500 req/s, nothing at full speed.
#
#   bench/allocations.sh       # about 1 minute, once built
#
# Environment: SECS (wrk run under dhat, default 5), KEEP=1 to keep the
# temp directory (the dhat files, logs), TOP (rows per table,
# default 30), BUILD=0 to use the binaries as they are: signoff's from
# `cargo build --profile bench` (in $CARGO_TARGET_DIR/release, with line
# tables) and bare-axum built with line tables in
# $CARGO_TARGET_DIR/axum-login-app-lines.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
REL=$TARGET/release
AL_LINES=$TARGET/axum-login-app-lines
SECS=${SECS:-5}
TOP=${TOP:-30}
PASSWORD='bench-password-123'
# shellcheck source=bench/lib.sh
source bench/lib.sh
build_example_pair "$AL_LINES"
printf '%s\n' "$PASSWORD" | "$REL/signoff" user add alice --password-stdin --db "sqlite://$TMP/app.db" >/dev/null

# sites NAME LOGIN CMD...: run CMD (listening on $PORT) under dhat, sign in
# at LOGIN (if any), replay GET /dashboard with wrk, stop CMD, print the
# table.
sites() {
    local name=$1 login=$2 code n
    shift 2
    COOKIE=""
    start "$name" valgrind --tool=dhat --dhat-out-file="$TMP/$name.dhat" "$@"
    wait_http "$PORT" /dashboard 60
    if [[ -n $login ]]; then
        login "http://127.0.0.1:$PORT" alice "$PASSWORD" "$login"
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' ${COOKIE:+-H "$COOKIE"} "http://127.0.0.1:$PORT/dashboard")
    [[ $code == 200 ]] || { echo "$name: GET /dashboard answered $code" >&2; exit 1; }
    wrk -t1 -c2 "-d${SECS}s" ${COOKIE:+-H "$COOKIE"} "http://127.0.0.1:$PORT/dashboard" >"$TMP/$name.wrk"
    # dhat writes its file when the process ends, also on SIGTERM. (Not
    # SIGINT: a script's background jobs ignore it.)
    kill -TERM "$LAST_PID"
    wait "$LAST_PID" 2>/dev/null || true
    n=$(awk '/requests in/ { print $1 }' "$TMP/$name.wrk")
    # Divided by wrk's requests alone: the few before them (readiness, the
    # sign-in, the check) and start-up count in, but are lost in thousands.
    echo
    echo "### $name ($n requests counted)"
    echo
    python3 bench/alloc_sites.py "$TMP/$name.dhat" "$n" "$TOP"
}

PORT=$(free_port)
sites bare-axum "" "$AL_LINES/release/bare-axum" --listen "127.0.0.1:$PORT"
PORT=$(free_port)
sites signoff-example /login "$REL/signoff-example" --listen "127.0.0.1:$PORT" --db "sqlite://$TMP/app.db"
