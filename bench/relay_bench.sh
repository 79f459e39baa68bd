#!/usr/bin/env bash
# mailkeep relay benchmark: see bench/README.md. All traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec /usr/bin/python3 bench/relay_bench.py "$@"
