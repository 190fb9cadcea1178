#!/usr/bin/env bash
# Sets up a virtual environment (once) and starts the service on its embedded default:
# SQLite and index files under ./data, ONNX Runtime on the CPU (CUDA when present).
#
# Model: LRFR_MODEL_PATH if set, else the bundled model models/bundled/lrfr.onnx when it
# exists, else the NON-LEARNED reference baseline (service/reference_model.py), built
# once into data/reference/reference.onnx and named as such in every answer.
# Keys: LRFR_ADMIN_KEYS if set, else a random admin key generated once into
# data/admin.key and printed here. Extra arguments go to `lrfr serve` (--host, --port).
set -euo pipefail
# shellcheck source=scripts/venv.sh
. "$(dirname "$0")/venv.sh"
if ! python -c "import fastapi, onnxruntime, faiss, lrfr" >/dev/null 2>&1; then
    python -m pip install --quiet --upgrade pip
    python -m pip install --quiet -e ".[service]"
fi

export LRFR_DATA_DIR=${LRFR_DATA_DIR:-data}
mkdir -p "$LRFR_DATA_DIR"
if [ -z "${LRFR_MODEL_PATH:-}" ] && [ ! -f models/bundled/lrfr.onnx ]; then
    export LRFR_MODEL_PATH="$LRFR_DATA_DIR/reference/reference.onnx"
    if [ ! -f "$LRFR_MODEL_PATH" ]; then
        python -c "import sys; from service.reference_model import build_reference_model as b; b(sys.argv[1])" "$LRFR_MODEL_PATH"
    fi
    echo "serve.sh: models/bundled/lrfr.onnx is missing; serving the NON-LEARNED reference" \
         "baseline $LRFR_MODEL_PATH (set LRFR_MODEL_PATH to an exported model)" >&2
fi
if [ -z "${LRFR_ADMIN_KEYS:-}" ] && [ "${LRFR_DEV_MODE:-0}" != "1" ]; then
    keyfile="$LRFR_DATA_DIR/admin.key"
    if [ ! -s "$keyfile" ]; then
        (umask 077 && python -c "import secrets; print(secrets.token_hex(24))" > "$keyfile")
    fi
    LRFR_ADMIN_KEYS=$(cat "$keyfile")
    export LRFR_ADMIN_KEYS
    echo "serve.sh: admin API key (X-API-Key) from $keyfile: $LRFR_ADMIN_KEYS" >&2
fi
exec lrfr serve "$@"
