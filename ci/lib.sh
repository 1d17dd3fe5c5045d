# Shared helpers of the ci/ scripts (sourced). Every checker script writes target/<checker>/summary.tsv
# with the columns below; ci/test and ci/verify collect them into one table.
#   model  checker  explored  properties  bugs_caught  seconds
set -euo pipefail
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

# summary_row FILE model checker explored properties bugs seconds
summary_row() { local f=$1; shift; mkdir -p "$(dirname "$f")"; (IFS=$'\t'; echo "$*") >>"$f"; }

# print_table FILE...: the collected summary rows as an aligned table.
print_table() {
    printf '%-44s %-14s %14s %-34s %-40s %8s\n' model checker explored properties "planted bugs caught" seconds
    printf '%.0s-' {1..160}; echo
    cat "$@" 2>/dev/null | awk -F'\t' '{ printf "%-44s %-14s %14s %-34s %-40s %8s\n", $1, $2, $3, $4, $5, $6 }'
}
