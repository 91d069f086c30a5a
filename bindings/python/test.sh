#!/usr/bin/env bash
# Builds the Python package into a virtualenv (target/python-venv) and runs its tests (pytest) on
# the committed fixtures, on the GPU adapter the library picks (lavapipe in CI). Needs python3 with
# venv; installs maturin, numpy and pytest into the virtualenv.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
venv="${RWKV_WGPU_PYTHON_VENV:-$root/target/python-venv}"
if ! command -v python3 >/dev/null; then
  echo "bindings/python/test.sh needs python3 (Debian/Ubuntu: apt-get install python3 python3-venv)" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" || {
    echo "bindings/python/test.sh needs Python's venv module (Debian/Ubuntu: apt-get install python3-venv)" >&2
    exit 1
  }
fi
"$venv/bin/python" -c "import maturin, numpy, pytest" 2>/dev/null || "$venv/bin/pip" install -q maturin numpy pytest
# A debug build shares the compiled dependencies of `cargo test`.
VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" maturin develop --quiet
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
"$venv/bin/python" -m pytest -q tests
