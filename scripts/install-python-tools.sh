#!/usr/bin/env bash
# Installs the PyPI tools the tests use, at pinned versions, when they are missing: schemathesis (fuzzes
# the app API from its OpenAPI document; APIFuzzTests runs it).
set -euo pipefail

if ! command -v st >/dev/null && [ ! -x "$HOME/.local/bin/st" ]; then
    echo "install-python-tools: installing schemathesis from PyPI" >&2
    python3 -m pip install --quiet --disable-pip-version-check 'schemathesis==4.32.5'
fi
