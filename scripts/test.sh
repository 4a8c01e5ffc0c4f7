#!/usr/bin/env bash
# One command that sets up and passes the tests: installs what is missing (venv, redis-server, Kafka jars),
# then runs ruff and pytest. Extra arguments go to pytest (e.g. scripts/test.sh -m unit).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MAMDR_VENV:-$HOME/.cache/mamdr/venv}"
"$root/scripts/setup.sh" --servers
cd "$root"
"$venv/bin/ruff" check .
exec "$venv/bin/python" -m pytest "$@"
