#!/usr/bin/env bash
# Remove PAI and all its data: scripts/destroy.sh [--env dev] [--yes] [--endpoint-url URL]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
make -C "$root" --no-print-directory setup >/dev/null
exec "$root/.venv/bin/python" "$root/scripts/destroy.py" "$@"
