#!/usr/bin/env bash
# Checks the Prometheus alerting rules (deploy/prometheus/sluice-rules.yml) with promtool and runs their
# unit tests (sluice-rules.test.yml), so a broken expression or a rule that no longer fires fails make test.
# promtool comes from Debian's prometheus package, installed when missing without starting its daemon.
set -euo pipefail
cd "$(dirname "$0")/.."

rules=deploy/prometheus/sluice-rules.yml
tests=deploy/prometheus/sluice-rules.test.yml

if ! command -v promtool >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "check-alert-rules: promtool is missing; run 'sudo apt-get install -y --no-install-recommends prometheus'" >&2
        exit 1
    fi
    echo "check-alert-rules: installing prometheus (for promtool)" >&2
    # Only promtool is wanted: a policy-rc.d that answers 101 keeps the package's scripts from starting
    # the prometheus daemon (Debian's Docker images ship one already; leave theirs alone).
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    # On a machine that runs systemd the package also enables the service for the next boot; undo that.
    if [ -d /run/systemd/system ]; then
        systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
fi

promtool check rules "$rules"
promtool test rules "$tests"
