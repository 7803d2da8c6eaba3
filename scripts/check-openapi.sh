#!/usr/bin/env bash
# Validates the app API's OpenAPI document (Sources/Worker/API/openapi.yaml) against the OpenAPI 3.1
# specification with openapi-spec-validator, installing it from PyPI when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

document=Sources/Worker/API/openapi.yaml
if ! python3 -c 'import openapi_spec_validator' 2>/dev/null; then
    python3 -m pip install --quiet 'openapi-spec-validator==0.9.0'
fi
python3 - "$document" <<'PY'
import sys
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

document, _ = read_from_filename(sys.argv[1])
validate(document)
operations = sum(1 for item in document["paths"].values() for method in item if method in ("get", "post", "put", "patch", "delete"))
print(f"check-openapi: {sys.argv[1]} is a valid OpenAPI {document['openapi']} document ({operations} operations)")
PY
