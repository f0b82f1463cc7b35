#!/usr/bin/env bash
# One entry point for a fresh machine (needs only python3 >= 3.10):
#   ./run.sh all    set up .venv, then train -> export -> quantize -> parity report -> benchmarks
#   ./run.sh test   set up .venv, then run the test suite
# MNIST is read from $EDGE_DIGITS_DATA (default: ../shared/data/MNIST/raw if present, else ./data,
# downloaded by torchvision when absent and the network allows).
set -euo pipefail
cd "$(dirname "$0")"

PY=.venv/bin/python
if [ -z "${EDGE_DIGITS_DATA:-}" ] && [ -d ../shared/data/MNIST/raw ]; then
    export EDGE_DIGITS_DATA="$PWD/../shared/data/MNIST/raw"
fi

setup() {
    if [ ! -x "$PY" ]; then
        python3 -m venv .venv
    fi
    # torch is pinned to the release this project is tested with; the extras bring the rest.
    if ! "$PY" -c "import torch, onnxruntime, pytest, cv2, starlette, playwright" 2>/dev/null || [ .venv/.installed -ot pyproject.toml ]; then
        "$PY" -m pip install -q --upgrade pip
        "$PY" -m pip install -q "torch==2.14.1" "torchvision==0.29.1" -e ".[cpu,train,export,dev,serve]"
        touch .venv/.installed
    fi
}

case "${1:-}" in
    all)
        setup
        shift
        "$PY" -m export.pipeline --out runs/main "$@"
        "$PY" -m benchmarks.latency --quick --model-dir runs/main
        ;;
    test)
        setup
        shift
        "$PY" -m pytest -q "$@"
        ;;
    *)
        echo "usage: ./run.sh all|test [extra args]" >&2
        exit 2
        ;;
esac
