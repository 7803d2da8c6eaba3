#!/usr/bin/env bash
# House rules that a compiler does not check; CI runs this before the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
fail() {
    echo "soundness: $1" >&2
    status=1
}

# Formatting, from the one .swift-format at the root.
if ! swift format lint --strict --recursive Sources Tests Benchmarks Plugins Package.swift; then
    fail "formatting differs; run 'swift format format -i -r Sources Tests Benchmarks Plugins Package.swift'"
fi

# No paths of anyone's machine in tracked files (deploy paths such as /etc/sluice are fine).
if git grep -nE '(/home/|/root/|/work/|/Users/)' -- ':!scripts/soundness.sh' ':!*.md'; then
    fail "absolute paths of a developer's machine in tracked files (above)"
fi

# Every @unchecked Sendable explains what keeps it safe, within the five lines that follow.
while IFS= read -r file; do
    awk -v file="$file" '
        /@unchecked Sendable/ { pending = NR; next }
        pending && /Safety:/ { pending = 0 }
        pending && NR > pending + 5 { printf "%s:%d: @unchecked Sendable without a Safety: line\n", file, pending; bad = 1; pending = 0 }
        END { if (pending) { printf "%s:%d: @unchecked Sendable without a Safety: line\n", file, pending; bad = 1 }; exit bad }
    ' "$file" || status=1
done < <(git ls-files '*.swift')

# Shell scripts.
if command -v shellcheck >/dev/null; then
    shellcheck scripts/*.sh .ci/run || fail "shellcheck found problems (above)"
else
    echo "soundness: shellcheck not installed; skipped (apt-get install shellcheck)" >&2
fi

exit "$status"
