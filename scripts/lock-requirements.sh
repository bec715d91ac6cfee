#!/usr/bin/env bash
# Re-resolve requirements.in into a fresh venv and rewrite the pinned requirements.txt / requirements-dev.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
dev='^(pytest|pluggy|iniconfig|ruff|trustme|time-machine|playwright)=='
tmp=$(mktemp -d)
python3.11 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet -r requirements.in pytest ruff trustme time-machine playwright
"$tmp/venv/bin/pip" freeze --exclude-editable > "$tmp/freeze.txt"
{ echo "# The lock of the runtime environment (Airflow's constraints file cannot be reached from here)."
  echo "# Top-level choices are in requirements.in; regenerate with scripts/lock-requirements.sh."
  grep -viE "$dev" "$tmp/freeze.txt"; } > requirements.txt
{ echo "# Test and lint tools, pinned; installs the runtime lock too."; echo "-r requirements.txt"
  grep -iE "$dev" "$tmp/freeze.txt"; } > requirements-dev.txt
rm -rf "$tmp"
