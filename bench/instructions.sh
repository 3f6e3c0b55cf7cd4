#!/usr/bin/env bash
# Instructions per request, counted by callgrind (repeatable: they do not
# depend on what else the machine is doing, unlike req/s), for an
# authenticated GET /dashboard from bare-axum (bench/axum-login-app) and
# from signoff-example, for a granted GET /.signoff/auth from
# `signoff serve`, and for a GET of a small HTML page through `signoff
# serve` (signed in, guard injected, access log on) beside the same GET
# through the bare hyper proxy of bench/load.sh, both in front of
# examples/bench_upstream.rs. Two floors, with no session work: the bare
# hyper endpoint (bench/forward_auth.sh's baseline) beside signoff's
# GET /.signoff/healthz, and the same page through `signoff serve` on a
# public path (no session looked up, no guard, no info line). Under
# valgrind SHA-256 runs in software (no SHA extensions), so its share is
# printed apart.
#
#   bench/instructions.sh      # about 3 minutes, once built
#
# bench/axum-login-app builds stripped (release): its allocations print as
# 0 (they are counted through the allocator's symbols).
#
# Environment: REL (signoff's bench builds, default $CARGO_TARGET_DIR/release
# or target/release; `cargo build --profile bench` writes there), AL_REL
# (bench/axum-login-app's, default $CARGO_TARGET_DIR/axum-login-app/release),
# BUILD=0 to use them as they are, SECS (counted wrk run, default 6).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
REL=${REL:-$TARGET/release}
AL_REL=${AL_REL:-$TARGET/axum-login-app/release}
SECS=${SECS:-6}
PASSWORD='bench-password-123'
if [[ ${BUILD:-1} != 0 ]]; then
    cargo build --profile bench -p signoff-server -p signoff-axum-example
    cargo build --profile bench -p signoff-server --example bench_upstream --example bare_proxy
    cargo build --release --manifest-path bench/axum-login-app/Cargo.toml \
        --target-dir "$TARGET/axum-login-app"
fi
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
printf '%s\n' "$PASSWORD" | "$REL/signoff" user add alice --password-stdin --db "sqlite://$TMP/app.db" >/dev/null

# count NAME PATH READY_PATH LOGIN_PATH CMD...: runs CMD under callgrind
# (the server listens on $PORT), signs alice in at LOGIN_PATH (if any),
# counts the instructions of SECS seconds of wrk on PATH.
count() {
    local name=$1 path=$2 ready=$3 login=$4 cookie="" i headers
    shift 4
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$TMP/$name.out" "$@" >"$TMP/$name.log" 2>&1 &
    PIDS+=("$!")
    for i in $(seq 1 200); do
        curl -s -o /dev/null "http://127.0.0.1:$PORT$ready" && break
        sleep 0.2
    done
    if [[ -n $login ]]; then
        headers=$(curl -s -o /dev/null -D - -X POST -H "Origin: http://127.0.0.1:$PORT" \
            --data-urlencode username=alice --data-urlencode "password=$PASSWORD" \
            --data-urlencode next=/ "http://127.0.0.1:$PORT$login")
        cookie=$(printf '%s' "$headers" | tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: \(signoff=[^;]*\);.*/\1/p' | head -n 1)
        [[ -n $cookie ]] || { echo "$name: sign-in failed" >&2; exit 1; }
    fi
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' ${cookie:+-H "Cookie: $cookie"} "http://127.0.0.1:$PORT$path")
    [[ $code == 200 ]] || { echo "$name: GET $path answered $code" >&2; exit 1; }
    wrk -t1 -c4 -d2s ${cookie:+-H "Cookie: $cookie"} "http://127.0.0.1:$PORT$path" >/dev/null
    callgrind_control -i on >/dev/null 2>&1
    wrk -t1 -c4 "-d${SECS}s" ${cookie:+-H "Cookie: $cookie"} "http://127.0.0.1:$PORT$path" >"$TMP/$name.wrk"
    callgrind_control -i off >/dev/null 2>&1
    callgrind_control -d >/dev/null 2>&1
    sleep 1
    kill "${PIDS[-1]}" 2>/dev/null || true
    wait "${PIDS[-1]}" 2>/dev/null || true
    local n total sha allocs
    n=$(awk '/requests in/ { print $1 }' "$TMP/$name.wrk")
    total=$(callgrind_annotate "$TMP/$name.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
    sha=$(callgrind_annotate --inclusive=yes "$TMP/$name.out.1" 2>/dev/null |
        awk '/sha256.rs:sha2::sha256::compress256 \[/ { gsub(",", "", $1); print $1; exit }' || true)
    allocs=$(callgrind_annotate --tree=caller "$TMP/$name.out.1" 2>/dev/null |
        grep -m 1 '< .*__rdl_alloc (' | sed 's/.*(\([0-9,]*\)x).*/\1/' | tr -d , || true)
    awk -v name="$name" -v n="$n" -v t="$total" -v s="${sha:-0}" -v a="${allocs:-0}" 'BEGIN {
        printf "| %s | %d | %.0f | %.0f | %.0f | %.1f |\n", name, n, t / n, s / n, (t - s) / n, a / n }'
}

echo "| server | requests counted | instructions/request | of which SHA-256 | the rest | allocations/request |"
echo "|---|---:|---:|---:|---:|---:|"
PORT=$(free_port)
count bare-axum /dashboard /dashboard "" "$AL_REL/bare-axum" --listen "127.0.0.1:$PORT"
PORT=$(free_port)
count signoff-example /dashboard /login /login "$REL/signoff-example" --listen "127.0.0.1:$PORT" --db "sqlite://$TMP/app.db"
PORT=$(free_port)
SIGNOFF_LOG=info count signoff-serve-auth /.signoff/auth /.signoff/healthz /.signoff/login \
    "$REL/signoff" serve --listen "127.0.0.1:$PORT" \
    --public-url "http://127.0.0.1:$PORT" --db "sqlite://$TMP/app.db"

# The floor of /auth: the bare hyper endpoint forward_auth.sh measures
# against, and signoff's do-nothing /.signoff/healthz (no session work).
PORT=$(free_port)
count bare-hyper-endpoint / / "" "$REL/examples/bench_upstream" "127.0.0.1:$PORT" text/html
PORT=$(free_port)
SIGNOFF_LOG=warn count signoff-serve-healthz /.signoff/healthz /.signoff/healthz "" \
    "$REL/signoff" serve --listen "127.0.0.1:$PORT" \
    --public-url "http://127.0.0.1:$PORT" --db "sqlite://$TMP/app.db"

# The proxied GET: the same small HTML page from examples/bench_upstream.rs,
# through the bare hyper proxy (no auth) and through `signoff serve`.
UPSTREAM=$(free_port)
"$REL/examples/bench_upstream" "127.0.0.1:$UPSTREAM" text/html >"$TMP/upstream.log" 2>&1 &
PIDS+=("$!")
PORT=$(free_port)
count bare-proxy / / "" "$REL/examples/bare_proxy" "127.0.0.1:$PORT" "127.0.0.1:$UPSTREAM"
PORT=$(free_port)
SIGNOFF_LOG=info count signoff-serve-proxy / /.signoff/healthz /.signoff/login \
    "$REL/signoff" serve --listen "127.0.0.1:$PORT" --upstream "http://127.0.0.1:$UPSTREAM" \
    --public-url "http://127.0.0.1:$PORT" --db "sqlite://$TMP/app.db"
# Its floor: the same page through `signoff serve` on a public path (no
# session looked up, so no guard; no info line).
PORT=$(free_port)
SIGNOFF_LOG=warn count signoff-serve-public / /.signoff/healthz "" \
    "$REL/signoff" serve --listen "127.0.0.1:$PORT" --upstream "http://127.0.0.1:$UPSTREAM" \
    --public-url "http://127.0.0.1:$PORT" --db "sqlite://$TMP/app.db" --public-path /
