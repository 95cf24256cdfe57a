#!/usr/bin/env bash
# Deploy PAI with the standard AWS credential chain: scripts/deploy.sh [--env dev] [--region R] [--endpoint-url URL]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
make -C "$root" --no-print-directory setup >/dev/null
exec "$root/.venv/bin/python" "$root/scripts/deploy.py" "$@"
