#!/usr/bin/env bash
# Creates (or reuses) the project's virtualenv outside the clone, so torch (a multi-GB wheel) is
# downloaded once per machine, and installs the project into it in editable mode.
# Also installs redis-server (Debian) and assembles the Kafka broker jars from Maven Central when asked.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MAMDR_VENV:-$HOME/.cache/mamdr/venv}"
want_servers="${1:-}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtualenv at $venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
fi
if [ ! -x "$venv/bin/uv" ]; then
  "$venv/bin/pip" install -q --disable-pip-version-check uv
fi
stamp="$venv/.mamdr-deps-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing dependencies (torch is large: first run takes a few minutes)"
  "$venv/bin/uv" pip install --python "$venv/bin/python" -q -e "$root[trainer,dev]"
  touch "$stamp"
else
  # cheap: re-link the editable install for this clone
  "$venv/bin/uv" pip install --python "$venv/bin/python" -q --no-deps -e "$root"
fi

if [ "$want_servers" = "--servers" ]; then
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "[setup] installing redis-server (Debian package)"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server >/dev/null;
    else sudo apt-get update -qq && sudo apt-get install -y -qq redis-server >/dev/null; fi
  fi
  if [ -x "$root/scripts/kafka/fetch.sh" ]; then
    "$root/scripts/kafka/fetch.sh"
  fi
fi
echo "[setup] ready: $venv"
