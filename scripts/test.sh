#!/usr/bin/env bash
# Installs everything the tests need, checks the code (ruff, mypy), then runs the tests.
#   bash scripts/test.sh           the whole suite (what CI runs): install, lint, types, every test
#   bash scripts/test.sh --fast    the inner loop: lint, types and the tests that need no real model,
#                                  browser or benchmark run (a few minutes); installs only if needed
# Any other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

fast=0
args=()
for arg in "$@"; do
  case "$arg" in
    --fast) fast=1 ;;
    *) args+=("$arg") ;;
  esac
done

if [ "$fast" = 0 ] || [ ! -x .venv/bin/pytest ] || [ ! -x .venv/bin/ruff ]; then
  bash scripts/install.sh --dev
fi
.venv/bin/ruff check src tests
.venv/bin/mypy
if [ "$fast" = 1 ]; then
  exec .venv/bin/python -m pytest -ra -q -m "not slow and not browser and not llama" ${args[@]+"${args[@]}"}
fi
exec .venv/bin/python -m pytest -ra ${args[@]+"${args[@]}"}
