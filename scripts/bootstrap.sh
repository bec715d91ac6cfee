#!/usr/bin/env bash
# Make this checkout runnable on a machine that has never seen it: system packages, the venv, the pinned deps.
# Called by `make up` and `make test`; cheap when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1 \
  || need_pkgs+=(postgresql-15 postgresql-client-15 postgresql-contrib)
command -v zstd >/dev/null 2>&1 || need_pkgs+=(zstd)
# The caches' Redis servers of the tests and `make up` (capacity_review).
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
command -v runuser >/dev/null 2>&1 || need_pkgs+=(util-linux)
# Parses docker-compose.yaml in the tests (no engine needed).
command -v docker-compose >/dev/null 2>&1 || need_pkgs+=(docker-compose)
# Headless browser for the e2e screenshot of the restore trigger form.
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing ${need_pkgs[*]} with apt-get ..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "Missing system packages: ${need_pkgs[*]}." >&2
    echo "Install them first, e.g.: sudo apt-get install ${need_pkgs[*]}" >&2
    exit 1
  fi
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || { echo "Python 3.11 is required (found $("$PYTHON" --version))." >&2; exit 1; }

stamp=.venv/.installed
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ requirements-dev.txt -nt "$stamp" ]; then
  echo "Installing the pinned requirements into .venv ..."
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  touch "$stamp"
fi
