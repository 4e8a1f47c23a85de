#!/usr/bin/env bash
# Check examples/clerk-sync.service with `systemd-analyze verify`.
#
# Usage: .ci/verify-unit.sh [BINARY] [UNIT_FILE]
#   BINARY     executable to put in ExecStart= instead of
#              /usr/local/bin/clerk-sync (default: the system's `true`),
#              so the check does not need clerk-sync installed
#   UNIT_FILE  unit to check (default: examples/clerk-sync.service)
#
# `systemd-analyze verify` exits 0 even when it ignores a bad line of the
# unit (unknown key, unparsable value, unknown section), so this script also
# fails on any message that points at the unit. Messages about the host (no
# D-Bus, not booted with systemd, other units installed on the machine) are
# shown but do not fail the check.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${1:-$(type -P true)}"
unit="${2:-$root/examples/clerk-sync.service}"
installed_path=/usr/local/bin/clerk-sync

if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "verify-unit: installing systemd for systemd-analyze" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
    else
        echo "verify-unit: systemd-analyze not found (install the systemd package)" >&2
        exit 2
    fi
fi
[ -f "$unit" ] || { echo "verify-unit: no such unit file: $unit" >&2; exit 2; }
[ -x "$bin" ] || { echo "verify-unit: not an executable: $bin" >&2; exit 2; }
case "$bin" in /*) ;; *) echo "verify-unit: BINARY must be an absolute path" >&2; exit 2 ;; esac

name="$(basename "$unit")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# Keep the file name: systemd derives the unit name from it.
sed "s#^ExecStart=$installed_path\\b#ExecStart=$bin#" "$unit" > "$tmp/$name"
if ! grep -q "^ExecStart=$bin\\b" "$tmp/$name"; then
    echo "verify-unit: no 'ExecStart=$installed_path' line to rewrite in $unit" >&2
    exit 1
fi

set +e
out="$(cd "$tmp" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man=no "$tmp/$name" 2>&1)"
rc=$?
set -e
[ -n "$out" ] && printf '%s\n' "$out"

# Problems in the unit are reported as "<path>:<line>: ..." or "<unit name>: ...".
problems="$(printf '%s\n' "$out" | grep -F -e "$tmp/$name" -e "$name:" || true)"
if [ "$rc" -ne 0 ] || [ -n "$problems" ]; then
    echo "verify-unit: FAILED: $name (systemd-analyze exit $rc)" >&2
    exit 1
fi
echo "verify-unit: OK: $name ($(systemd-analyze --version | head -n1))"
