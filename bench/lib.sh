# Shared by the bench/*.sh scripts: a temp directory,
# background processes killed on exit, and wrk runs that record CPU use
# and the share of the machine other processes took.
# shellcheck shell=bash

TMP=$(mktemp -d "${TMPDIR:-/tmp}/signoff-bench.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${KEEP:-0} == 1 ]]; then
        echo "kept $TMP" >&2
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT

log() { printf '\n== %s\n' "$*" >&2; }

# free_port: a port nothing listens on now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_http PORT PATH [SECONDS]: until something answers there (10 s by
# default; a server under valgrind needs longer).
wait_http() {
    local i
    for i in $(seq 1 $((${3:-10} * 10))); do
        if curl -s -o /dev/null "http://127.0.0.1:$1$2"; then
            return 0
        fi
        sleep 0.1
    done
    echo "nothing answers on port $1" >&2
    exit 1
}

# start NAME CMD...: run in the background, stdout+stderr to $TMP/NAME.log.
start() {
    local name=$1
    shift
    "$@" >"$TMP/$name.log" 2>&1 &
    PIDS+=("$!")
    LAST_PID=$!
}

# build_example_pair BARE_DIR: unless BUILD=0, signoff and signoff-example
# with Cargo's bench profile (into $CARGO_TARGET_DIR/release), and bare-axum
# (bench/axum-login-app) in release with line tables kept, into
# BARE_DIR/release: line tables change no code, and perf and dhat can name
# its frames.
build_example_pair() {
    [[ ${BUILD:-1} != 0 ]] || return 0
    cargo build --profile bench -p signoff-server --bin signoff
    cargo build --profile bench -p signoff-axum-example
    CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_PROFILE_RELEASE_STRIP=none \
        cargo build --release --manifest-path bench/axum-login-app/Cargo.toml \
        --target-dir "$1" --bin bare-axum
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
mb() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }
# rss_split PID: "ANON / FILES", the two parts of the RSS in MB. ANON is
# the process's own memory (heap, stacks); FILES are the pages of the
# executable and libraries it has mapped (mostly code), clean pages
# shared with the page cache that the kernel can drop and read again.
rss_split() {
    awk '/^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 } END { printf "%.1f / %.1f", a / 1024, f / 1024 }' "/proc/$1/status"
}

# resp_bytes FILE: bytes read per answer in a wrk run. wrk counts a 3xx
# (a redirect to the sign-in page) as a success: an answer shorter than
# the page is one.
resp_bytes() {
    awk '/requests in/ {
        v = $(NF - 1); b = v + 0
        if (v ~ /GB$/) b *= 1024 ^ 3; else if (v ~ /MB$/) b *= 1024 ^ 2; else if (v ~ /KB$/) b *= 1024
        printf "%d", b / $1
    }' "$1"
}

# to_ms VALUE: wrk's "401.00us" / "1.23ms" / "1.01s" in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n *= 1; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n
    }'
}

# login ORIGIN USER PASSWORD [PATH]: signs in at ORIGIN (signoff, or a
# proxy in front of it, or an app on signoff::web with PATH /login); sets
# TOKEN and COOKIE (a `Cookie:` header line), or exits.
login() {
    local headers status
    headers=$(curl -s -o /dev/null -D - -X POST -H "Origin: $1" \
        --data-urlencode "username=$2" --data-urlencode "password=$3" \
        "$1${4:-/.signoff/login}")
    status=$(printf '%s' "$headers" | awk 'NR == 1 { print $2 }')
    TOKEN=$(printf '%s' "$headers" | tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: signoff=\([^;]*\);.*/\1/p')
    if [[ $status != 303 || -z $TOKEN ]]; then
        echo "login at $1 failed (status $status):" >&2
        printf '%s\n' "$headers" >&2
        exit 1
    fi
    COOKIE="Cookie: signoff=$TOKEN"
}

# cpu_ticks PID: user + system CPU time of a process, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# ours_ticks: CPU ticks of everything this script started: the servers
# still running plus every child already reaped (wrk runs, curl, awk).
ours_ticks() {
    local pid sum=0 t
    for pid in "${PIDS[@]}"; do
        if t=$(cpu_ticks "$pid" 2>/dev/null); then
            sum=$((sum + t))
        fi
    done
    times | awk -v sum="$sum" -v hz="$(getconf CLK_TCK)" 'NR == 2 {
        for (i = 1; i <= 2; i++) { split($i, p, "m"); sum += (p[1] * 60 + p[2]) * hz }
        printf "%d", sum
    }'
}
# machine_ticks: "busy total" CPU ticks of the whole machine (all CPUs).
# Busy leaves out interrupt time: our own loopback traffic is processed
# there, outside any process's account.
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }

# check_alive PID NAME: fail, with the end of its log, if a server died.
check_alive() {
    if [[ ! -e /proc/$1/stat ]]; then
        echo "$2 (pid $1) has died; end of $TMP/$2.log:" >&2
        tail -n 20 "$TMP/$2.log" >&2 || true
        exit 1
    fi
}

# FOREIGN_MAX: a run during which processes outside this benchmark (a
# build, say) used more than this share of the machine (%) is repeated,
# up to RETRIES times, after waiting up to QUIET_WAIT seconds for quiet;
# the share is reported either way.
FOREIGN_MAX=${FOREIGN_MAX:-10}
RETRIES=${RETRIES:-2}

# wait_quiet SECONDS: wait (at most SECONDS) until processes outside this
# benchmark use at most FOREIGN_MAX % of the machine over a second.
wait_quiet() {
    local deadline=$((SECONDS + $1)) o0 o1 m0 m1 foreign said=0
    while ((SECONDS < deadline)); do
        read -r -a m0 <<<"$(machine_ticks)"
        o0=$(ours_ticks)
        sleep 1
        o1=$(ours_ticks)
        read -r -a m1 <<<"$(machine_ticks)"
        foreign=$(awk -v b=$((m1[0] - m0[0])) -v t=$((m1[1] - m0[1])) -v o=$((o1 - o0)) \
            'BEGIN { f = (b - o) * 100 / t; printf "%.0f", f < 0 ? 0 : f }')
        if ((foreign <= FOREIGN_MAX)); then
            return 0
        fi
        if ((said == 0)); then
            echo "other processes use ${foreign}% of the machine; waiting up to $1 s for quiet" >&2
            said=1
        fi
    done
    echo "still busy after $1 s (${foreign}%); going on, see the 'other load' column" >&2
}

RUN=0
# wrk_run LABEL PID NAME WRK-ARGS...: one run against the server PID (log
# NAME); appends "LABEL rps p50 p99 non2xx cpu_us_per_request foreign%
# bare_rps bare_p99" (the figures of the last run whose label starts with
# `bare`, the baseline) to $TMP/results and
# leaves the raw output in $TMP/wrk-N-LABEL.txt.
wrk_run() {
    local label=$1 pid=$2 name=$3
    shift 3
    local attempt file t0 t1 o0 o1 m0 m1 foreign
    for attempt in $(seq 0 "$RETRIES"); do
        check_alive "$pid" "$name"
        RUN=$((RUN + 1))
        file="$TMP/wrk-$RUN-$label.txt"
        read -r -a m0 <<<"$(machine_ticks)"
        o0=$(ours_ticks)
        t0=$(cpu_ticks "$pid")
        wrk "$@" >"$file" 2>&1
        t1=$(cpu_ticks "$pid")
        o1=$(ours_ticks)
        read -r -a m1 <<<"$(machine_ticks)"
        check_alive "$pid" "$name"
        foreign=$(awk -v b=$((m1[0] - m0[0])) -v t=$((m1[1] - m0[1])) -v o=$((o1 - o0)) \
            'BEGIN { f = (b - o) * 100 / t; printf "%.0f", f < 0 ? 0 : f }')
        if ((foreign <= FOREIGN_MAX)) || ((attempt == RETRIES)); then
            break
        fi
        echo "$label: other processes used ${foreign}% of the machine; running it again" >&2
        wait_quiet "${QUIET_WAIT:-60}"
    done
    local rps p50 p99 bad reqs cpu
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$file")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$file")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$file")")
    bad=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$file")
    bad=${bad:-0}
    reqs=$(awk '/requests in/ { print $1 }' "$file")
    cpu=$(awk -v t=$((t1 - t0)) -v us="$TICK_US" -v n="$reqs" 'BEGIN { printf "%.1f", t * us / n }')
    if [[ $label == bare* ]]; then
        LAST_BARE="$rps $p99"
    fi
    echo "$label $rps $p50 $p99 $bad $cpu $foreign ${LAST_BARE:-nan nan}" >>"$TMP/results"
    printf '%-12s %9s req/s  p50 %7s ms  p99 %7s ms  %6s CPU us/req  non-2xx %s  foreign %s%%\n' \
        "$label" "$rps" "$p50" "$p99" "$cpu" "$bad" "$foreign" >&2
    if [[ $bad != 0 ]]; then
        echo "warning: $label had $bad non-2xx answers (see $file)" >&2
    fi
    LAST_WRK=$file
}

# mean LABEL FIELD: mean of a field (2 rps, 3 p50, 4 p99, 6 CPU us/request)
# over LABEL's runs.
# maxf LABEL FIELD: the largest value of a field over LABEL's runs.
maxf() {
    awk -v l="$1" -v f="$2" '$1 == l && $f > m { m = $f } END { printf "%d", m }' "$TMP/results"
}
mean() {
    awk -v l="$1" -v f="$2" '$1 == l { s += $f; n++ } END { if (n) printf "%.3f", s / n; else print "nan" }' "$TMP/results"
}

pass() { if awk "BEGIN { exit !($1) }"; then echo PASS; else echo FAIL; fi; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# paired LABEL: mean over LABEL's runs of rps / the bare run just before,
# and of p99 minus that bare run's p99.
paired_ratio() {
    awk -v l="$1" '$1 == l { s += $2 / $8; n++ } END { printf "%.2f", s / n }' "$TMP/results"
}
paired_p99() {
    awk -v l="$1" '$1 == l { s += $4 - $9; n++ } END { printf "%+.3f", s / n }' "$TMP/results"
}

