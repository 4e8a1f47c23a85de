#!/usr/bin/env bash
# CI: the example readers in examples/readers/ against a live mirror.
#
# Installs the Node example's packages (npm ci), starts `clerk-sync serve` on
# 127.0.0.1 port 0 with a temporary database, sends signed deliveries with
# `clerk-sync send`, runs the Python and the Node reader against the live
# file while serve writes it (active-users, follow, follow --watch), checks
# what they print, then stops serve with SIGTERM and checks it exited 0.
#
# Usage: .ci/readers.sh [BINARY]   (default: target/debug/clerk-sync, built if missing)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

say() { printf 'readers: %s\n' "$*"; }
fail() { printf 'readers: FAILED: %s\n' "$*" >&2; exit 1; }

bin="${1:-$root/target/debug/clerk-sync}"
if [ ! -x "$bin" ]; then
    say "no $bin; building it"
    cargo build --locked --bin clerk-sync
fi
for tool in node npm python3; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed (the readers need Node.js 20 or later, npm and python3)"
done
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || fail "Node.js $(node --version) is too old; better-sqlite3 12 needs 20 or later"

# Only this script's settings reach serve, send and the readers.
while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(CLERK_|CREDENTIALS_DIRECTORY$)' || true)
export RUST_LOG=info NO_COLOR=1
export CLERK_WEBHOOK_SIGNING_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw

echo "== npm ci (examples/readers/node)"
# better-sqlite3 builds its addon from the source in its npm package: no
# prebuilt binary is fetched from elsewhere, and with the distribution's
# Node.js headers installed node-gyp does not fetch them either.
export npm_config_build_from_source=true
if [ -z "${npm_config_nodedir:-}" ] && [ -f /usr/include/node/node_api.h ]; then
    export npm_config_nodedir=/usr
fi
(cd examples/readers/node && npm ci --no-audit --no-fund --loglevel=error </dev/null)
node -e 'require(process.argv[1])' "$root/examples/readers/node/node_modules/better-sqlite3" \
    || fail "better-sqlite3 was installed but does not load"
say "better-sqlite3 $(node -p "require('$root/examples/readers/node/node_modules/better-sqlite3/package.json').version") loads on Node.js $(node --version)"

tmp="$(mktemp -d)"
serve_pid=""
cleanup() {
    if [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; then
        kill -KILL "$serve_pid" 2>/dev/null || true
        wait "$serve_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
db="$tmp/clerk-sync.db"

echo "== serve on 127.0.0.1:0"
"$bin" serve --listen 127.0.0.1:0 --db "$db" >"$tmp/serve.log" 2>&1 </dev/null &
serve_pid=$!
addr=""
for _ in $(seq 100); do
    addr="$(grep -o 'listening on http://[0-9.:]*' "$tmp/serve.log" | head -n1 | sed 's#^listening on http://##' || true)"
    [ -n "$addr" ] && break
    kill -0 "$serve_pid" 2>/dev/null || { cat "$tmp/serve.log" >&2; fail "serve exited before listening"; }
    sleep 0.1
done
[ -n "$addr" ] || { cat "$tmp/serve.log" >&2; fail "serve did not log 'listening on http://' within 10 s"; }
case "$addr" in 127.0.0.1:*) ;; *) fail "serve bound $addr, not 127.0.0.1" ;; esac
url="http://$addr/api/clerk-webhook"
say "serve (pid $serve_pid) listens on $addr"

send() { "$bin" send "$@" --url "$url" >"$tmp/send.out" 2>&1 </dev/null || { cat "$tmp/send.out" >&2; fail "send $*"; }; }
send user.created --user-id user_ci_ada --email ada@example.com
send user.updated --user-id user_ci_ada --email ada.lovelace@example.com
send user.created --user-id user_ci_grace --email grace@example.com
send user.created --user-id user_ci_gone --email gone@example.com
send user.deleted --user-id user_ci_gone
say "sent 5 deliveries (3 users created, 1 updated, 1 deleted)"

py() { timeout 30 python3 examples/readers/reader.py --db "$db" "$@" </dev/null; }
js() { (cd examples/readers/node && timeout 30 node reader.js --db "$db" "$@" </dev/null); }

# expect FILE WHAT PATTERN...: every extended regex matches a line of FILE.
expect() {
    local file="$1" what="$2"; shift 2
    local pattern
    for pattern in "$@"; do
        grep -Eq -- "$pattern" "$file" || { echo "--- $what printed:" >&2; cat "$file" >&2; fail "$what: no line matches /$pattern/"; }
    done
}
lines() { grep -c . "$1" || true; }

tab=$'\t'
for reader in py js; do
    name=$([ "$reader" = py ] && echo "Python reader" || echo "Node reader")
    state="$tmp/$reader.seq"

    "$reader" active-users >"$tmp/users.out" || fail "$name active-users exited $?"
    expect "$tmp/users.out" "$name active-users" \
        "^user_ci_ada${tab}ada\.lovelace@example\.com" "^user_ci_grace${tab}grace@example\.com"
    ! grep -q user_ci_gone "$tmp/users.out" || fail "$name active-users lists the deleted user"
    [ "$(lines "$tmp/users.out")" = 2 ] || fail "$name active-users: $(lines "$tmp/users.out") lines, want 2"
    say "$name active-users: user_ci_ada (updated email) and user_ci_grace, not the deleted user_ci_gone"

    "$reader" follow --state "$state" >"$tmp/follow.out" || fail "$name follow exited $?"
    expect "$tmp/follow.out" "$name follow" \
        "^1${tab}[0-9]+${tab}user${tab}user_ci_ada${tab}created${tab}webhook$" \
        "^2${tab}[0-9]+${tab}user${tab}user_ci_ada${tab}updated${tab}webhook$" \
        "^3${tab}[0-9]+${tab}user${tab}user_ci_grace${tab}created${tab}webhook$" \
        "^4${tab}[0-9]+${tab}user${tab}user_ci_gone${tab}created${tab}webhook$" \
        "^5${tab}[0-9]+${tab}user${tab}user_ci_gone${tab}deleted${tab}webhook$"
    [ "$(lines "$tmp/follow.out")" = 5 ] || fail "$name follow: $(lines "$tmp/follow.out") lines, want 5"
    [ "$(cat "$state")" = 5 ] || fail "$name follow saved seq '$(cat "$state")', want 5"
    say "$name follow: changes 1-5 (created, updated, created, created, deleted), seq 5 saved"

    "$reader" follow --state "$state" >"$tmp/follow.out" || fail "$name follow (again) exited $?"
    [ "$(lines "$tmp/follow.out")" = 0 ] || fail "$name follow from seq 5 printed: $(cat "$tmp/follow.out")"
    say "$name follow from the saved seq 5: nothing new"
done

# Both readers watch at once while serve writes two more changes.
say "both readers follow --watch --max-seconds 6 while serve writes"
py follow --state "$tmp/py.seq" --watch --max-seconds 6 >"$tmp/py-watch.out" & py_pid=$!
js follow --state "$tmp/js.seq" --watch --max-seconds 6 >"$tmp/js-watch.out" & js_pid=$!
sleep 2
send user.created --user-id user_ci_linus --email linus@example.com
send user.deleted --user-id user_ci_grace
wait "$py_pid" || fail "Python reader follow --watch exited $?"
wait "$js_pid" || fail "Node reader follow --watch exited $?"
for reader in py js; do
    name=$([ "$reader" = py ] && echo "Python reader" || echo "Node reader")
    expect "$tmp/$reader-watch.out" "$name follow --watch" \
        "^6${tab}[0-9]+${tab}user${tab}user_ci_linus${tab}created${tab}webhook$" \
        "^7${tab}[0-9]+${tab}user${tab}user_ci_grace${tab}deleted${tab}webhook$"
    [ "$(lines "$tmp/$reader-watch.out")" = 2 ] || fail "$name follow --watch: $(lines "$tmp/$reader-watch.out") lines, want 2"
    [ "$(cat "$tmp/$reader.seq")" = 7 ] || fail "$name follow --watch saved seq '$(cat "$tmp/$reader.seq")', want 7"
    say "$name follow --watch: printed changes 6 and 7 as they were committed, saved seq 7, stopped after 6 s"
done

py active-users >"$tmp/users.out"
js active-users >"$tmp/users-js.out"
cmp -s "$tmp/users.out" "$tmp/users-js.out" || fail "the readers disagree on active-users"
expect "$tmp/users.out" "active-users after the watch" "^user_ci_ada${tab}" "^user_ci_linus${tab}"
! grep -q user_ci_grace "$tmp/users.out" || fail "active-users lists user_ci_grace after her deletion"
say "both readers agree: active users are now user_ci_ada and user_ci_linus"

# A missing file is refused, not created: neither reader ever writes.
! py --db "$tmp/missing.db" active-users 2>/dev/null || fail "Python reader opened a missing database"
! js --db "$tmp/missing.db" active-users 2>/dev/null || fail "Node reader opened a missing database"
[ ! -e "$tmp/missing.db" ] || fail "a reader created $tmp/missing.db"
say "both readers refuse a missing database and create nothing"

echo "== stop serve"
kill -TERM "$serve_pid"
for _ in $(seq 200); do
    kill -0 "$serve_pid" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$serve_pid" 2>/dev/null && { cat "$tmp/serve.log" >&2; fail "serve did not exit within 20 s of SIGTERM"; }
set +e
wait "$serve_pid"
rc=$?
set -e
serve_pid=""
[ "$rc" = 0 ] || { cat "$tmp/serve.log" >&2; fail "serve exited $rc after SIGTERM, want 0"; }
say "serve exited 0 after SIGTERM"
say "OK"
