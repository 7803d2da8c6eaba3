#!/usr/bin/env bash
# Checks deploy/sluice.service with systemd-analyze verify, on a copy whose ExecStart points at the
# binary built here (verify insists that the binary exists).
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-$(swift build --show-bin-path)/sluice}
if [ ! -x "$binary" ]; then
    echo "verify-unit: $binary is not built; run 'swift build' first" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed -e "s|^ExecStart=/usr/local/bin/sluice|ExecStart=$binary|" \
    -e "s|^EnvironmentFile=/etc/sluice/sluice.env|EnvironmentFile=-$work/sluice.env|" \
    deploy/sluice.service >"$work/sluice.service"
cp deploy/sluice.env.example "$work/sluice.env"
if ! output=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$work/sluice.service" 2>&1); then
    echo "$output" >&2
    echo "verify-unit: systemd-analyze verify failed" >&2
    exit 1
fi
# verify exits 0 on some warnings; treat any line about our unit as a failure.
if echo "$output" | grep -q "sluice.service"; then
    echo "$output" >&2
    echo "verify-unit: systemd-analyze reported problems with the unit" >&2
    exit 1
fi
echo "verify-unit: deploy/sluice.service passes systemd-analyze verify"
