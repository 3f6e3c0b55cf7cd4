#!/usr/bin/env bash
# The gateway with 100 access rules against the same gateway with none,
# in the same run (docs/benchmarks.md, "Access rules").
#
#   bench/rules.sh           # about 2 minutes on 2 cores
#
# Two `signoff serve` on one database in front of one upstream: one with
# no [access] table, one with 100 rules (prefixes, exact paths, globs,
# hosts, methods) that all miss the benchmark's path, so each request
# tries every rule before the default decides. Each "rules" run comes
# right after a "none" run; the ratio pairs them.
#
# Environment: DURATION (per wrk run, default 10s), CONNS (32), ROUNDS (3),
# BASE_PORT (18500), FOREIGN_MAX (10), RETRIES (1), KEEP=1, REL, BUILD=0
# (as in bench/load.sh).
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-3}
BASE_PORT=${BASE_PORT:-18500}
FOREIGN_MAX=${FOREIGN_MAX:-10}
RETRIES=${RETRIES:-1}
PASSWORD='bench-password-123'
REL=${REL:-${CARGO_TARGET_DIR:-target}/release}

# shellcheck source=bench/lib.sh
source bench/lib.sh

if [[ ${BUILD:-1} != 0 ]]; then
    log "building"
    cargo build --profile bench -p signoff-server --bin signoff --examples
fi

UP=$((BASE_PORT + 1))
NONE=$((BASE_PORT + 2))
RULES=$((BASE_PORT + 3))

CONFIG="$TMP/rules.toml"
{
    echo '[access]'
    echo 'default = "signed_in"'
    for n in $(seq 0 99); do
        echo '[[access.rule]]'
        case $((n % 4)) in
        0) printf 'path_prefix = "/area%d"\ngroups = ["g%d"]\n' "$n" "$n" ;;
        1) printf 'path = "/static%d/app.css"\npolicy = "public"\n' "$n" ;;
        2) printf 'path_glob = "/api/*/v%d/**"\nmethods = ["DELETE"]\npolicy = "deny"\n' "$n" ;;
        3) printf 'host = "app%d.example.com"\npolicy = "signed_in"\n' "$n" ;;
        esac
    done
} >"$CONFIG"

start upstream "$REL/examples/bench_upstream" "127.0.0.1:$UP" text/html
wait_http "$UP" /
DB="$TMP/bench.db"
printf '%s\n' "$PASSWORD" | "$REL/signoff" user add bench --password-stdin --db "sqlite://$DB" >&2
SIGNOFF_LOG=warn start none "$REL/signoff" serve --upstream "http://127.0.0.1:$UP" \
    --listen "127.0.0.1:$NONE" --db "sqlite://$DB"
PID_none=$LAST_PID
SIGNOFF_LOG=warn start rules "$REL/signoff" serve --upstream "http://127.0.0.1:$UP" \
    --listen "127.0.0.1:$RULES" --db "sqlite://$DB" --config "$CONFIG"
PID_rules=$LAST_PID
wait_http "$NONE" /.signoff/healthz
wait_http "$RULES" /.signoff/healthz
"$REL/signoff" rules check --config "$CONFIG" | tail -1 >&2

login "http://127.0.0.1:$NONE" bench "$PASSWORD"
for port in "$NONE" "$RULES"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "$COOKIE" "http://127.0.0.1:$port/page")
    [[ $code == 200 ]] || { echo "authenticated GET on port $port answered $code" >&2; exit 1; }
done

WRK=(-t2 "-c$CONNS" "-d$DURATION" --latency)
wait_quiet "${QUIET_WAIT:-60}"
for port in "$NONE" "$RULES"; do
    wrk -t2 "-c$CONNS" -d2s -H "$COOKIE" "http://127.0.0.1:$port/page" >/dev/null
done
log "$ROUNDS rounds: no rules, then 100 rules, $DURATION each, $CONNS connections"
for round in $(seq 1 "$ROUNDS"); do
    echo "-- round $round" >&2
    # wrk_run pairs each run with the last one labelled bare*.
    wrk_run bare_none "$PID_none" none "${WRK[@]}" -H "$COOKIE" "http://127.0.0.1:$NONE/page"
    wrk_run rules "$PID_rules" rules "${WRK[@]}" -H "$COOKIE" "http://127.0.0.1:$RULES/page"
done

echo
echo "| setup | req/s | p99 ms | CPU µs/req | vs no rules (paired) | p99 added |"
echo "|---|---:|---:|---:|---:|---:|"
printf '| no rules (baseline) | %.0f | %.3f | %.1f | 1.00× | 0 |\n' \
    "$(mean bare_none 2)" "$(mean bare_none 4)" "$(mean bare_none 6)"
printf '| 100 rules, the default decides | %.0f | %.3f | %.1f | %s× | %s ms |\n' \
    "$(mean rules 2)" "$(mean rules 4)" "$(mean rules 6)" "$(paired_ratio rules)" "$(paired_p99 rules)"
