#!/usr/bin/env bash
# What the kernel does per request, for an authenticated GET /dashboard
# from bare-axum (bench/axum-login-app, no session, no auth) and from
# signoff-example: context switches, futex calls (a thread waiting for or
# waking another; in signoff-example mostly glibc malloc's arena lock, see
# docs/benchmarks.md) and CPU time, counted by `perf stat` on the server
# while wrk runs. The two run one after the other, ROUNDS times, so each
# round pairs them.
#
#   bench/syscalls.sh          # about 1 minute, once built
#
# Environment: SECS (counted wrk run, default 5), CONNS (32), ROUNDS (2),
# BUILD=0 to use the binaries as they are (signoff's `--profile bench`
# builds in $CARGO_TARGET_DIR/release, bare-axum's release build with line
# tables in $CARGO_TARGET_DIR/axum-login-app-lines, as bench/allocations.sh
# builds them), PRELOAD (a library both
# servers start with in LD_PRELOAD, to try another allocator in both),
# BEFORE (a directory holding another build of signoff-example, say of the
# commit before a change: it runs as a third server, "before", in each
# round, on its own copy of the database).
# Needs perf with access to the syscall tracepoints (root, or a
# perf_event_paranoid that allows it).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
REL=$TARGET/release
AL_LINES=$TARGET/axum-login-app-lines
SECS=${SECS:-5}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-2}
PASSWORD='bench-password-123'
# shellcheck source=bench/lib.sh
source bench/lib.sh
build_example_pair "$AL_LINES"
printf '%s\n' "$PASSWORD" | "$REL/signoff" user add alice --password-stdin --db "sqlite://$TMP/app.db" >/dev/null

PRE=()
[[ -n ${PRELOAD:-} ]] && PRE=(env "LD_PRELOAD=$PRELOAD")
EVENTS=context-switches,syscalls:sys_enter_futex,task-clock

# serve NAME LOGIN CMD...: start CMD on $PORT, sign in at LOGIN (if any);
# sets PID_NAME, PORT_NAME, COOKIE_NAME.
serve() {
    local name=$1 login=$2
    shift 2
    PORT=$(free_port)
    start "$name" ${PRE[@]+"${PRE[@]}"} "$@" --listen "127.0.0.1:$PORT"
    printf -v "PID_$name" '%s' "$LAST_PID"
    printf -v "PORT_$name" '%s' "$PORT"
    wait_http "$PORT" /dashboard
    COOKIE=""
    if [[ -n $login ]]; then
        login "http://127.0.0.1:$PORT" alice "$PASSWORD" "$login"
    fi
    printf -v "COOKIE_$name" '%s' "$COOKIE"
    local code
    code=$(curl -s -o "$TMP/$name.html" -w '%{http_code}' ${COOKIE:+-H "$COOKIE"} "http://127.0.0.1:$PORT/dashboard")
    [[ $code == 200 ]] || { echo "$name: GET /dashboard answered $code" >&2; exit 1; }
    printf -v "BYTES_$name" '%s' "$(wc -c <"$TMP/$name.html")"
}

serve bare "" "$AL_LINES/release/bare-axum"
SERVERS=(bare example)
if [[ -n ${BEFORE:-} ]]; then
    cp "$TMP/app.db" "$TMP/before.db"
    serve before /login "$BEFORE/signoff-example" --db "sqlite://$TMP/before.db"
    SERVERS+=(before)
fi
serve example /login "$REL/signoff-example" --db "sqlite://$TMP/app.db"

# count NAME: one counted wrk run; prints a table row, or exits if the
# answers were not the signed-in page or perf counted nothing.
count() {
    local name=$1 pid port cookie bytes n bad
    pid="PID_$1" port="PORT_$1" cookie="COOKIE_$1" bytes="BYTES_$1"
    perf stat -x, -e "$EVENTS" -p "${!pid}" -o "$TMP/$name.perf" -- sleep "$SECS" &
    local perf_pid=$!
    PIDS+=("$perf_pid")
    wrk -t2 "-c$CONNS" "-d${SECS}s" ${!cookie:+-H "${!cookie}"} "http://127.0.0.1:${!port}/dashboard" >"$TMP/$name.wrk"
    wait "$perf_pid"
    n=$(awk '/requests in/ { print $1 }' "$TMP/$name.wrk")
    bad=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$TMP/$name.wrk")
    if [[ -z $n || $n == 0 || -n $bad ]]; then
        echo "$name: wrk counted ${n:-no} requests, ${bad:-0} of them not 2xx; see $TMP/$name.wrk (KEEP=1 keeps it)" >&2
        exit 1
    fi
    # wrk counts a redirect to the sign-in page as a success: answers
    # shorter than the page are not the page.
    if (($(resp_bytes "$TMP/$name.wrk") < ${!bytes})); then
        echo "$name: answers were shorter than the ${!bytes}-byte page (signed out?); see $TMP/$name.wrk" >&2
        exit 1
    fi
    awk -F, -v name="$name" -v n="$n" -v secs="$SECS" '
        $3 == "context-switches" { cs = $1; seen++ }
        $3 == "syscalls:sys_enter_futex" { fx = $1; seen++ }
        $3 == "task-clock" { cpu = $1; seen++ }
        END {
            if (seen != 3 || cs !~ /^[0-9.]+$/ || fx !~ /^[0-9.]+$/ || cpu !~ /^[0-9.]+$/) {
                print name ": perf stat did not count all three events (tracepoints need root or a low perf_event_paranoid)" > "/dev/stderr"
                exit 1
            }
            printf "| %s | %.0f | %.3f | %.3f | %.1f |\n", name, n / secs, cs / n, fx / n, cpu * 1000 / n
        }
    ' "$TMP/$name.perf"
}

for s in "${SERVERS[@]}"; do
    pid="PID_$s" port="PORT_$s" cookie="COOKIE_$s"
    wrk -t2 "-c$CONNS" -d2s ${!cookie:+-H "${!cookie}"} "http://127.0.0.1:${!port}/dashboard" >/dev/null
done
echo "## Kernel events per request ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, wrk -t2 -c$CONNS -d${SECS}s${PRELOAD:+, LD_PRELOAD=$PRELOAD})"
echo
echo "| server | req/s | context switches | futex calls | CPU µs |"
echo "|---|---:|---:|---:|---:|"
for round in $(seq 1 "$ROUNDS"); do
    for s in "${SERVERS[@]}"; do
        count "$s"
    done
done
