# Sourced by serve.sh and test.sh: moves to the repository root and activates the
# virtual environment $LRFR_VENV (default .venv), creating it the first time.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${LRFR_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
