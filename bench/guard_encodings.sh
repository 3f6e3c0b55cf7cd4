#!/usr/bin/env bash
# What the guard costs on compressed pages: a 16 KiB HTML page through a
# bare hyper proxy (the baseline, which passes the upstream's bytes on),
# and through `signoff serve` with a signed-in session, where the page is
# decoded, gets its guard, and is compressed again for the client. Each
# gateway run comes right after a baseline run on the same upstream.
#
#   bench/guard_encodings.sh     # about 3 minutes on 2 cores
#
# Environment: DURATION (per wrk run, default 10s), CONNS (32), ROUNDS (2),
# BASE_PORT (18700), FOREIGN_MAX (10), RETRIES (2), QUIET_WAIT (60), KEEP=1
# to keep the temp directory. Needs wrk and curl.
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-2}
BASE_PORT=${BASE_PORT:-18700}
PASSWORD='bench-password-123'
REL=target/release
OUT=target/bench-guard-encodings.md
CHROMIUM_ACCEPT='Accept-Encoding: gzip, deflate, br, zstd'

for tool in wrk curl; do
    command -v "$tool" >/dev/null || {
        echo "$tool is needed (apt-get install wrk curl)" >&2
        exit 1
    }
done

# shellcheck source=bench/lib.sh
source bench/lib.sh

log "building"
cargo build --profile bench -p signoff-server --bin signoff --examples

DB="$TMP/bench.db"
printf '%s\n' "$PASSWORD" | "$REL/signoff" user add bench --password-stdin --db "sqlite://$DB" >&2

# One upstream, one bare proxy and one gateway per coding the upstream uses.
port=$BASE_PORT
for coding in identity gzip zstd; do
    up=$((port + 1)) bare=$((port + 2)) gw=$((port + 3))
    port=$((port + 10))
    start "up_$coding" "$REL/examples/bench_upstream" "127.0.0.1:$up" text/html "$coding"
    wait_http "$up" /
    start "bare_$coding" "$REL/examples/bare_proxy" "127.0.0.1:$bare" "127.0.0.1:$up"
    eval "PID_bare_$coding=$LAST_PID PORT_bare_$coding=$bare"
    wait_http "$bare" /
    SIGNOFF_LOG=warn start "gw_$coding" "$REL/signoff" serve --upstream "http://127.0.0.1:$up" \
        --listen "127.0.0.1:$gw" --db "sqlite://$DB"
    eval "PID_gw_$coding=$LAST_PID PORT_gw_$coding=$gw"
    wait_http "$gw" /.signoff/healthz
done

login "http://127.0.0.1:$PORT_gw_identity" bench "$PASSWORD"
for coding in identity gzip zstd; do
    port_var="PORT_gw_$coding"
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "$COOKIE" -H "$CHROMIUM_ACCEPT" "http://127.0.0.1:${!port_var}/")
    [[ $code == 200 ]] || { echo "authenticated GET via gw_$coding answered $code" >&2; exit 1; }
done
sizes=""
for coding in identity gzip zstd; do
    bare_var="PORT_bare_$coding" gw_var="PORT_gw_$coding"
    b=$(curl -s -H "$CHROMIUM_ACCEPT" "http://127.0.0.1:${!bare_var}/" | wc -c)
    g=$(curl -s -H "$COOKIE" -H "$CHROMIUM_ACCEPT" "http://127.0.0.1:${!gw_var}/" | wc -c)
    sizes+="$coding: bare $b bytes, gateway $g bytes; "
done
echo "page bytes on the wire (Chromium's Accept-Encoding): $sizes" >&2

WRK=(-t2 "-c$CONNS" "-d$DURATION" --latency)
wait_quiet "${QUIET_WAIT:-60}"
log "warm-up (2 s each)"
for coding in identity gzip zstd; do
    bare_var="PORT_bare_$coding" gw_var="PORT_gw_$coding"
    wrk -t2 "-c$CONNS" -d2s -H "$CHROMIUM_ACCEPT" "http://127.0.0.1:${!bare_var}/" >/dev/null
    wrk -t2 "-c$CONNS" -d2s -H "$COOKIE" -H "$CHROMIUM_ACCEPT" "http://127.0.0.1:${!gw_var}/" >/dev/null
done

# Runs: (label, upstream coding, client Accept-Encoding).
RUNS=(
    "identity_to_identity identity Accept-Encoding: identity"
    "gzip_to_zstd gzip $CHROMIUM_ACCEPT"
    "gzip_to_gzip gzip Accept-Encoding: gzip"
    "zstd_to_zstd zstd $CHROMIUM_ACCEPT"
)
for round in $(seq 1 "$ROUNDS"); do
    echo "-- round $round" >&2
    for run in "${RUNS[@]}"; do
        read -r label coding accept <<<"$run"
        bare_pid="PID_bare_$coding" bare_port="PORT_bare_$coding"
        gw_pid="PID_gw_$coding" gw_port="PORT_gw_$coding"
        # `bare…` marks the baseline: paired_ratio divides by the run before.
        wrk_run "bare_$label" "${!bare_pid}" "bare_$coding" "${WRK[@]}" -H "$accept" \
            "http://127.0.0.1:${!bare_port}/"
        wrk_run "$label" "${!gw_pid}" "gw_$coding" "${WRK[@]}" -H "$COOKIE" -H "$accept" \
            "http://127.0.0.1:${!gw_port}/"
    done
done

{
    echo "| upstream → client | bare req/s | gateway req/s | vs bare (paired) | p99 added ms | gateway CPU µs/req | bare CPU µs/req |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for run in "${RUNS[@]}"; do
        read -r label _ <<<"$run"
        printf '| %s | %.0f | %.0f | %s× | %s | %s | %s |\n' "${label/_to_/ → }" \
            "$(mean "bare_$label" 2)" "$(mean "$label" 2)" "$(paired_ratio "$label")" \
            "$(paired_p99 "$label")" "$(mean "$label" 6)" "$(mean "bare_$label" 6)"
    done
    echo
    echo "page bytes on the wire: $sizes"
} | tee "$OUT"
