# Shared helpers of the ci/ scripts (sourced). Every checker script writes target/<checker>/summary.tsv
# with the columns below; ci/test and ci/verify collect them into one table.
#   model  checker  explored  properties  bugs_caught  seconds
# shellcheck shell=bash
set -Eeuo pipefail
# No silent exits: a command that fails outside a condition (set -e) names itself, its line and status.
# shellcheck disable=SC2154 # rc is assigned inside the trap
trap 'rc=$?; [[ $- != *e* ]] || [ "$BASH_SUBSHELL" != 0 ] || printf "\nFAIL: %s: line %s: \`%s\` exited with status %s\n" "$(basename "$0")" "$LINENO" "$BASH_COMMAND" "$rc" >&2' ERR
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TERM_COLOR=never

say() { printf '\n==> %s\n' "$*"; }
die() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }

# need_apt PKG CMD: install a Debian package when CMD is missing (we run as root in CI).
need_apt() {
    command -v "$2" >/dev/null 2>&1 && return 0
    say "installing $1 (apt)"
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
    else
        sudo apt-get update -qq >/dev/null && sudo apt-get install -y -qq "$1" >/dev/null
    fi
    command -v "$2" >/dev/null 2>&1 || die "could not install $1"
}

# The benches count syscalls per thread with perf on the raw_syscalls:sys_enter tracepoint, whose id
# is in tracefs: mount it if it is not (root only; without it the benches fall back to
# /proc/thread-self/io and their syscall gates are info, which they say).
need_tracefs() {
    local d
    for d in /sys/kernel/tracing /sys/kernel/debug/tracing; do
        [ -e "$d/events/raw_syscalls/sys_enter/id" ] && return 0
    done
    if [ "$(id -u)" = 0 ] && mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null; then
        say "mounted tracefs on /sys/kernel/tracing (perf syscall counters)"
    else
        echo "tracefs not mounted and cannot be: syscall gates will be info only" >&2
    fi
}

# summary_row FILE model checker explored properties bugs seconds
summary_row() { local f=$1; shift; mkdir -p "$(dirname "$f")"; (IFS=$'\t'; echo "$*") >>"$f"; }

# print_table FILE...: the collected summary rows as an aligned table.
print_table() {
    printf '%-44s %-14s %14s %-34s %-40s %8s\n' model checker explored properties "planted bugs caught" seconds
    printf '%.0s-' {1..160}; echo
    cat "$@" 2>/dev/null | awk -F'\t' '{ printf "%-44s %-14s %14s %-34s %-40s %8s\n", $1, $2, $3, $4, $5, $6 }'
}

# cargo_tests LABEL CARGO_TEST_ARGS...: run `cargo test ARGS`, fail loudly on any failure or if no test
# ran, and add a row "LABEL  cargo test  <n> tests" to target/summary/std.tsv.
cargo_tests() {
    local label=$1; shift
    local log; log=target/summary/$(echo "$label" | tr -c 'a-zA-Z0-9' '_').log
    mkdir -p target/summary
    cargo test "$@" 2>&1 | tee "$log" | grep -E '^test result:|FAILED|panicked' || true
    grep -qE 'FAILED|error: test failed|error\[|error: could not compile' "$log" && die "$label: failed (log: $log)"
    local passed; passed=$(grep -E '^test result:' "$log" | awk '{s+=$4} END {print s+0}')
    [ "$passed" -gt 0 ] || die "$label: no test ran"
    summary_row target/summary/std.tsv "$label" "cargo test" "$passed tests" "-" "-" "-"
}
