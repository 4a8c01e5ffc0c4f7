#!/usr/bin/env bash
# One command that sets up and runs the main job on embedded backends (no servers needed).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MAMDR_VENV:-$HOME/.cache/mamdr/venv}"
"$root/scripts/setup.sh"
exec "$venv/bin/mamdr" quickstart "$@"
