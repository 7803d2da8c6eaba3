#!/usr/bin/env bash
# Applies the schema and runs the service in the foreground (what 'make run' does once PostgreSQL is up).
set -euo pipefail
bin=.build/release/sluice
"$bin" migrate
echo "run-service: schema applied to $DATABASE_URL; starting 'sluice serve' (Ctrl-C stops it)" >&2
exec "$bin" serve
