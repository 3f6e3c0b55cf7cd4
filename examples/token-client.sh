#!/usr/bin/env bash
# Token mode, end to end, with curl: sign in, call the app, refresh, sign
# out, and see the same access token refused at once (long before it
# expires).
#
#   cargo run --release -- demo            # prints the URL and a password
#   examples/token-client.sh http://127.0.0.1:8080 demo PASSWORD
#
# Needs curl and python3 (to read JSON). Exits non-zero if any step does
# not behave as described.
set -euo pipefail
base="${1:?usage: $0 BASE_URL USER PASSWORD}"
user="${2:?usage: $0 BASE_URL USER PASSWORD}"
password="${3:?usage: $0 BASE_URL USER PASSWORD}"
api="$base/.signoff"
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
fail() { echo "FAILED: $*" >&2; exit 1; }
# The body goes to stdout, the status code to the file named by $1.
call() {
    local status_file="$1"; shift
    curl -sS -o /dev/stdout -w '%{stderr}%{http_code}' "$@" 2>"$status_file"
}
tmp="$(mktemp)"; trap 'rm -f "$tmp"' EXIT

echo "1. sign in: POST $api/api/login"
login="$(python3 -c 'import json,sys; print(json.dumps({"username":sys.argv[1],"password":sys.argv[2],"client_id":"example-cli"}))' "$user" "$password")"
pair="$(call "$tmp" -X POST -H 'Content-Type: application/json' --data "$login" "$api/api/login")"
[ "$(cat "$tmp")" = 200 ] || fail "login answered $(cat "$tmp"): $pair"
access="$(echo "$pair" | field access_token)"
refresh="$(echo "$pair" | field refresh_token)"
echo "   got an access token (expires in $(echo "$pair" | field expires_in) s) and a refresh token"

echo "2. call the app with it: GET $base/api/me"
me="$(call "$tmp" -H "Authorization: Bearer $access" "$base/api/me")"
[ "$(cat "$tmp")" = 200 ] || fail "the app answered $(cat "$tmp")"
echo "   $me"

echo "3. refresh: POST $api/token grant_type=refresh_token"
pair="$(call "$tmp" -X POST --data-urlencode grant_type=refresh_token --data-urlencode "refresh_token=$refresh" -d client_id=example-cli "$api/token")"
[ "$(cat "$tmp")" = 200 ] || fail "refresh answered $(cat "$tmp"): $pair"
access="$(echo "$pair" | field access_token)"
old_refresh="$refresh"
refresh="$(echo "$pair" | field refresh_token)"
echo "   new pair; the old refresh token is now used up"

echo "4. call the app with the new access token"
call "$tmp" -H "Authorization: Bearer $access" "$base/api/me" >/dev/null
[ "$(cat "$tmp")" = 200 ] || fail "the app answered $(cat "$tmp")"
echo "   200"

echo "5. sign out: POST $api/api/logout"
out="$(call "$tmp" -X POST -H "Authorization: Bearer $access" "$api/api/logout")"
[ "$(cat "$tmp")" = 200 ] || fail "logout answered $(cat "$tmp"): $out"
echo "   $out"

echo "6. the same access token, still unexpired, is refused at once"
refused="$(call "$tmp" -H "Authorization: Bearer $access" "$base/api/me")"
[ "$(cat "$tmp")" = 401 ] || fail "expected 401, got $(cat "$tmp"): $refused"
echo "   401 $refused"

echo "7. and so are both refresh tokens"
for rt in "$refresh" "$old_refresh"; do
    body="$(call "$tmp" -X POST --data-urlencode grant_type=refresh_token --data-urlencode "refresh_token=$rt" "$api/token")"
    [ "$(cat "$tmp")" = 400 ] || fail "expected 400, got $(cat "$tmp"): $body"
    echo "   400 $body"
done
echo "signed out means out."
