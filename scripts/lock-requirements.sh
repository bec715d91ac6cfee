#!/usr/bin/env bash
# Re-resolve requirements.in into a fresh venv and rewrite the pinned requirements.txt / requirements-dev.txt.
# requirements-dev.txt holds what the test and lint tools add on top of the runtime set (moto's server brings
# Flask and more that production never imports).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
python3.11 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet -r requirements.in
"$tmp/venv/bin/pip" freeze --exclude-editable > "$tmp/runtime.txt"
"$tmp/venv/bin/pip" install --quiet pytest ruff trustme time-machine playwright "moto[server]"
"$tmp/venv/bin/pip" freeze --exclude-editable > "$tmp/freeze.txt"
{ echo "# The lock of the runtime environment (Airflow's constraints file cannot be reached from here)."
  echo "# Top-level choices are in requirements.in; regenerate with scripts/lock-requirements.sh."
  cat "$tmp/runtime.txt"; } > requirements.txt
{ echo "# Test and lint tools, pinned; installs the runtime lock too."; echo "-r requirements.txt"
  grep -vxFf "$tmp/runtime.txt" "$tmp/freeze.txt" | sed 's/^moto==/moto[server]==/'; } > requirements-dev.txt
rm -rf "$tmp"
