#!/usr/bin/env bash
# One entry point for a fresh machine (needs only python3 >= 3.10):
#   ./run.sh all    set up .venv, then train -> export -> quantize -> parity report -> benchmarks
#                   (./run.sh all --smoke: the same stages in seconds, one epoch; what the suite runs)
#   ./run.sh test   set up .venv, then run the test suite
#   ./run.sh lint   set up .venv, then ruff check . (the rules are in pyproject.toml)
# MNIST is read from $EDGE_DIGITS_DATA, else ./data/MNIST/raw, where torchvision downloads it when absent
# and the network allows (train/idx.py: resolve_data_dir).
# EDGE_DIGITS_PYTHON=/path/to/python uses that interpreter as it is: no .venv, nothing installed.
set -euo pipefail
cd "$(dirname "$0")"

PY=${EDGE_DIGITS_PYTHON:-.venv/bin/python}

setup() {
    if [ -n "${EDGE_DIGITS_PYTHON:-}" ]; then
        return
    fi
    if [ ! -x "$PY" ]; then
        python3 -m venv .venv
    fi
    # torch is pinned to the release this project is tested with; the extras bring the rest.
    if ! "$PY" -c "import torch, onnxruntime, pytest, xdist, cv2, starlette, playwright, ruff" 2>/dev/null || [ .venv/.installed -ot pyproject.toml ]; then
        "$PY" -m pip install -q --upgrade pip
        "$PY" -m pip install -q "torch==2.14.1" "torchvision==0.29.1" -e ".[cpu,train,export,dev,serve]"
        touch .venv/.installed
    fi
}

case "${1:-}" in
    all)
        setup
        shift
        speed=--quick
        if [ "${1:-}" = --smoke ]; then  # the stages end to end in seconds (tests): one epoch, figures meaningless
            shift
            set -- --epochs 1 "$@"
            speed=--tiny
        fi
        "$PY" -m export.pipeline --out runs/main "$@"
        "$PY" -m benchmarks.latency "$speed" --model-dir runs/main
        ;;
    test)
        setup
        shift
        # Two test files at a time, each on one core (tests/conftest.py: one intra-op thread): 209 s against
        # 315 s one at a time on a quiet 2-core machine. EDGE_DIGITS_TEST_WORKERS=0 runs them in one process.
        "$PY" -m pytest -q -n "${EDGE_DIGITS_TEST_WORKERS:-2}" --dist loadfile "$@"
        ;;
    lint)
        setup
        shift
        "$PY" -m ruff check . "$@"
        ;;
    *)
        echo "usage: ./run.sh all|test|lint [extra args]" >&2
        exit 2
        ;;
esac
