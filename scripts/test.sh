#!/usr/bin/env bash
# Sets up a virtual environment (once) and runs the linters and the test suite.
# PostgreSQL tests run when LRFR_TEST_POSTGRES_URL is set (see scripts/start-postgres.sh).
set -euo pipefail
# shellcheck source=scripts/venv.sh
. "$(dirname "$0")/venv.sh"
python -m pip install --quiet --upgrade pip
# The CPU build of torch that lies on this machine's disk; never a CUDA build.
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[train,service,milvus,dev]"
ruff check .
mypy
python -m pytest "$@"
