#!/usr/bin/env bash
# Installs the Debian packages Sluice builds and tests with, when they are missing.
set -euo pipefail

missing=()
pkg-config --exists libpq 2>/dev/null || missing+=(libpq-dev pkg-config)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v psql >/dev/null || missing+=(postgresql-client)
if [ "${CI:-}" = true ] && ! command -v shellcheck >/dev/null; then
    missing+=(shellcheck)
fi
if [ "${SLUICE_NEEDS_WRK:-0}" = 1 ] && ! command -v wrk >/dev/null; then
    missing+=(wrk)
fi
if [ "${SLUICE_NEEDS_SYSTEMD:-0}" = 1 ] && ! command -v systemd-analyze >/dev/null; then
    missing+=(systemd)
fi

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing Debian packages: ${missing[*]}; run 'sudo apt-get install -y ${missing[*]}'" >&2
    exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
