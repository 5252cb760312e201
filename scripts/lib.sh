# shellcheck shell=bash
# Helpers sourced by scripts/setup.sh and scripts/test.sh. Not executable on its own.

# Repository root, whatever the caller's working directory.
OSAM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export OSAM_ROOT

step() { printf '== %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die()  { printf 'error: %s\n' "$*" >&2; exit 1; }

# run_quiet LABEL CMD...: run CMD with its output in a log; on failure show the
# log's tail and stop. Keeps a successful setup to a handful of lines.
run_quiet() {
    local label="$1"; shift
    local log rc=0
    log="$(mktemp "${TMPDIR:-/tmp}/osam-${label// /_}.XXXXXX.log")"
    "$@" >"$log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        printf 'error: %s failed (exit %d): %s\n' "$label" "$rc" "$*" >&2
        tail -n 60 "$log" >&2
        printf 'error: full log kept at %s\n' "$log" >&2
        exit "$rc"
    fi
    rm -f "$log"
}

# elapsed SECONDS_START: "1.2s" since a $EPOCHREALTIME value.
elapsed() {
    local now="$EPOCHREALTIME"
    awk -v a="$1" -v b="$now" 'BEGIN { printf "%.1fs", b - a }'
}

# debian_mirror: the Debian mirror for debootstrap: $OSAM_DEBIAN_MIRROR, else the one apt uses.
debian_mirror() {
    if [ -n "${OSAM_DEBIAN_MIRROR:-}" ]; then printf '%s\n' "$OSAM_DEBIAN_MIRROR"; return; fi
    local m
    m=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$m" ] || m=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$m" ] || die "no Debian mirror found in apt's sources: set OSAM_DEBIAN_MIRROR"
    printf '%s\n' "$m"
}
