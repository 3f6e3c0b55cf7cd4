#!/usr/bin/env bash
# Load benchmark of forward-auth, each figure against a baseline measured
# in the same run, right before it:
#   1. GET /.signoff/auth with a warm session cache, against a bare hyper
#      endpoint answering 200 (examples/bench_upstream);
#   2. nginx -> signoff forward-auth -> upstream, with the committed
#      examples/nginx/signoff.conf, against nginx -> upstream with no auth
#      (same nginx, same upstream keep-alive settings);
#   3. the floor: GET /.signoff/healthz (SIGNOFF_LOG=warn), which does no
#      session work, against the bare endpoint: what signoff's HTTP stack
#      (hyper-util's server, axum's routing, its layers) costs alone.
#
#   bench/forward_auth.sh      # about 6 minutes on 2 cores
#
# Environment: DURATION (per wrk run, default 10s), CONNS (32), ROUNDS (3),
# BASE_PORT (18500), FOREIGN_MAX (10), RETRIES (2), QUIET_WAIT (60), KEEP=1
# to keep the temp directory. Needs nginx and wrk (Debian packages).
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-3}
BASE_PORT=${BASE_PORT:-18500}
PASSWORD='bench-password-123'
REL=target/release
OUT=target/bench-forward-auth.md

for tool in nginx wrk curl; do
    command -v "$tool" >/dev/null || {
        echo "$tool is needed (apt-get install nginx wrk curl)" >&2
        exit 1
    }
done

# shellcheck source=bench/lib.sh
source bench/lib.sh

log "building"
cargo build --profile bench -p signoff-server --bin signoff --examples

UP=$((BASE_PORT + 1))
FA=$((BASE_PORT + 2))
FA_WARN=$((BASE_PORT + 3))
NGX_AUTH=$((BASE_PORT + 4))
NGX_PLAIN=$((BASE_PORT + 5))

log "starting the upstream, signoff (forward-auth only) and nginx"
start upstream "$REL/examples/bench_upstream" "127.0.0.1:$UP" text/html
PID_upstream=$LAST_PID
wait_http "$UP" /

DB="$TMP/bench.db"
printf '%s\n' "$PASSWORD" | "$REL/signoff" user add bench --password-stdin --db "sqlite://$DB" >&2
ORIGIN="http://127.0.0.1:$NGX_AUTH"
start fa env SIGNOFF_LOG=info "$REL/signoff" serve --listen "127.0.0.1:$FA" \
    --public-url "$ORIGIN" --trusted-proxy 127.0.0.1 --db "sqlite://$DB"
PID_fa=$LAST_PID
start fa_warn env SIGNOFF_LOG=warn "$REL/signoff" serve --listen "127.0.0.1:$FA_WARN" \
    --public-url "$ORIGIN" --trusted-proxy 127.0.0.1 --db "sqlite://$DB"
PID_fa_warn=$LAST_PID
wait_http "$FA" /.signoff/healthz
wait_http "$FA_WARN" /.signoff/healthz

# The committed example, with this run's ports, plus a server without auth.
sed -e "s/127\.0\.0\.1:8080/127.0.0.1:$FA/" -e "s/127\.0\.0\.1:5000/127.0.0.1:$UP/" \
    -e "s/listen 8000;/listen 127.0.0.1:$NGX_AUTH;/" examples/nginx/signoff.conf >"$TMP/signoff.conf"
# Beside nginx.conf, as the example says.
cp examples/nginx/signoff-identity-headers.conf "$TMP/"
cat >"$TMP/nginx.conf" <<NGINX
daemon off;
worker_processes auto;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $TMP/body;
    proxy_temp_path $TMP/proxy;
    fastcgi_temp_path $TMP/fastcgi;
    uwsgi_temp_path $TMP/uwsgi;
    scgi_temp_path $TMP/scgi;
    include $TMP/signoff.conf;

    upstream plain_app {
        server 127.0.0.1:$UP;
        keepalive 32;
    }
    server {
        listen 127.0.0.1:$NGX_PLAIN;
        location / {
            proxy_pass http://plain_app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
NGINX
start nginx nginx -c "$TMP/nginx.conf" -p "$TMP"
PID_nginx=$LAST_PID
wait_http "$NGX_PLAIN" /
wait_http "$NGX_AUTH" /

log "logging in"
login "$ORIGIN" bench "$PASSWORD"
for url in "http://127.0.0.1:$FA/.signoff/auth" "http://127.0.0.1:$FA_WARN/.signoff/auth" "$ORIGIN/private/a"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "$COOKIE" "$url")
    if [[ $code != 200 ]]; then
        echo "authenticated GET $url answered $code" >&2
        exit 1
    fi
done
code=$(curl -s -o /dev/null -w '%{http_code}' "$ORIGIN/private/a")
if [[ $code != 401 ]]; then
    echo "unauthenticated GET through nginx answered $code, not 401" >&2
    exit 1
fi

WRK=(-t2 "-c$CONNS" "-d$DURATION" --latency)
AUTH_HEADERS=(-H "$COOKIE" -H "X-Original-URI: /private/a" -H "X-Original-Method: GET")

wait_quiet "${QUIET_WAIT:-60}"
log "warm-up (2 s each)"
wrk -t2 "-c$CONNS" -d2s "http://127.0.0.1:$UP/" >/dev/null
wrk -t2 "-c$CONNS" -d2s "${AUTH_HEADERS[@]}" "http://127.0.0.1:$FA/.signoff/auth" >/dev/null
wrk -t2 "-c$CONNS" -d2s "${AUTH_HEADERS[@]}" "http://127.0.0.1:$FA_WARN/.signoff/auth" >/dev/null
wrk -t2 "-c$CONNS" -d2s "http://127.0.0.1:$NGX_PLAIN/" >/dev/null
wrk -t2 "-c$CONNS" -d2s -H "$COOKIE" "$ORIGIN/" >/dev/null

log "throughput: $ROUNDS rounds, each measured run right after its baseline, $DURATION each, $CONNS connections"
for round in $(seq 1 "$ROUNDS"); do
    echo "-- round $round" >&2
    wrk_run bare_hyper "$PID_upstream" upstream "${WRK[@]}" "http://127.0.0.1:$UP/"
    wrk_run fa "$PID_fa" fa "${WRK[@]}" "${AUTH_HEADERS[@]}" "http://127.0.0.1:$FA/.signoff/auth"
    wrk_run bare_hyper "$PID_upstream" upstream "${WRK[@]}" "http://127.0.0.1:$UP/"
    wrk_run fa_warn "$PID_fa_warn" fa_warn "${WRK[@]}" "${AUTH_HEADERS[@]}" "http://127.0.0.1:$FA_WARN/.signoff/auth"
    wrk_run bare_hyper "$PID_upstream" upstream "${WRK[@]}" "http://127.0.0.1:$UP/"
    wrk_run floor "$PID_fa_warn" fa_warn "${WRK[@]}" "http://127.0.0.1:$FA_WARN/.signoff/healthz"
    wrk_run bare_nginx "$PID_nginx" nginx "${WRK[@]}" "http://127.0.0.1:$NGX_PLAIN/"
    wrk_run nginx_fa "$PID_fa" fa "${WRK[@]}" -H "$COOKIE" "$ORIGIN/"
done

row() {
    local label=$1 text=$2 base=$3
    printf '| %s | %.0f | %.3f | %.3f | %sx %s | %s | %.1f | %s |\n' "$text" \
        "$(mean "$label" 2)" "$(mean "$label" 3)" "$(mean "$label" 4)" \
        "$(paired_ratio "$label")" "$base" "$(paired_p99 "$label")" "$(mean "$label" 6)" "$(maxf "$label" 7)"
}
base_row() {
    printf '| %s | %.0f | %.3f | %.3f | 1.00x | 0 | %s | %s |\n' "$2" \
        "$(mean "$1" 2)" "$(mean "$1" 3)" "$(mean "$1" 4)" "-" "$(maxf "$1" 7)"
}
fa_ratio=$(paired_ratio fa)
ngx_ratio=$(paired_ratio nginx_fa)
{
    echo "## forward-auth load benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, wrk -t2 -c$CONNS -d$DURATION, $ROUNDS rounds, means)"
    echo
    echo "Ratios and added p99 pair each run with the baseline run just before it. signoff CPU is"
    echo "per request, of the signoff process that answered."
    echo
    echo "| Setup | req/s | p50 ms | p99 ms | req/s vs baseline | p99 added ms | signoff CPU us/req | other load % (max) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    base_row bare_hyper "bare hyper endpoint, 200 (baseline 1)"
    row fa "GET /.signoff/auth, default (info access log)" "of 1"
    row fa_warn "GET /.signoff/auth, SIGNOFF_LOG=warn" "of 1"
    row floor "floor: GET /.signoff/healthz, SIGNOFF_LOG=warn (signoff's HTTP stack, no session)" "of 1"
    base_row bare_nginx "nginx -> upstream, no auth (baseline 2)"
    row nginx_fa "nginx -> signoff forward-auth -> upstream (examples/nginx)" "of 2"
    echo
    echo "| Target | measured | result |"
    echo "|---|---:|---|"
    echo "| 1. /.signoff/auth req/s >= 0.85x bare hyper (default config) | ${fa_ratio}x | $(pass "$fa_ratio >= 0.85") |"
    echo "| 2. nginx + forward-auth req/s >= 0.7x nginx alone | ${ngx_ratio}x | $(pass "$ngx_ratio >= 0.7") |"
} >"$TMP/summary.md"
mkdir -p target
cp "$TMP/summary.md" "$OUT"
echo
cat "$OUT"
echo
echo "(written to $OUT)"
