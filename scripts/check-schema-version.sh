#!/usr/bin/env bash
# Fails when schema.sql changed without a version bump: schema.sql must equal the newest frozen copy in
# Tests/Fixtures/schemas, whose name carries the version schema.sql declares, and no frozen copy that git
# knows may ever have changed. See Tests/Fixtures/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=Tests/Fixtures/schemas
declared() { sed -n 's/^SET LOCAL sluice\.schema_version = \([0-9][0-9]*\);$/\1/p' "$1"; }

version=$(declared schema.sql)
if [ -z "$version" ] || [ "$(grep -c '^SET LOCAL sluice\.schema_version = ' schema.sql)" -ne 1 ]; then
    echo "check-schema-version: schema.sql must declare its version once, as 'SET LOCAL sluice.schema_version = N;'" >&2
    exit 1
fi
newest=$(find "$dir" -name '[0-9][0-9]-v*.sql' | sort | tail -n 1)
if ! cmp -s schema.sql "$newest"; then
    next=$(printf '%02d' $((10#$(basename "$newest" | cut -c1-2) + 1)))
    echo "check-schema-version: schema.sql differs from its frozen copy $newest." >&2
    echo "  A frozen version never changes: raise 'SET LOCAL sluice.schema_version' to $((version + 1))," >&2
    echo "  add the upgrade step for the change, then: cp schema.sql $dir/$next-v$((version + 1)).sql" >&2
    exit 1
fi
case "$(basename "$newest")" in
"$(basename "$newest" | cut -c1-2)-v$version.sql") ;;
*)
    echo "check-schema-version: the newest frozen copy $newest is not named for version $version" >&2
    exit 1
    ;;
esac
# Versions from 3 on are one file each, in order.
previous=0
for file in $(find "$dir" -name '[0-9][0-9]-v*.sql' | sort); do
    v=$(basename "$file" | sed 's/^[0-9][0-9]-v\([0-9][0-9]*\).*/\1/')
    if [ "$v" -lt "$previous" ] || { [ "$v" -ge 3 ] && [ "$v" -eq "$previous" ]; }; then
        echo "check-schema-version: $file: versions must rise, one frozen copy for each from 3 on" >&2
        exit 1
    fi
    previous=$v
done
# A frozen copy that was committed once must never change in a later commit.
if git rev-parse --git-dir >/dev/null 2>&1; then
    for file in $(find "$dir" -name '[0-9][0-9]-v*.sql' | sort); do
        blobs=$(git log --format=%H -- "$file" | while read -r commit; do
            git rev-parse --verify --quiet "$commit:$file" || true
        done | sort -u | wc -l)
        if [ "$blobs" -gt 1 ]; then
            echo "check-schema-version: $file was changed after it was committed; a frozen schema never changes" >&2
            exit 1
        fi
        if git cat-file -e "HEAD:$file" 2>/dev/null && ! git diff --quiet HEAD -- "$file"; then
            echo "check-schema-version: $file differs from its committed copy; a frozen schema never changes" >&2
            exit 1
        fi
    done
fi
echo "check-schema-version: schema.sql is version $version, frozen as $newest"
