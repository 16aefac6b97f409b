#!/usr/bin/env bash
# The two commands of the README:
#   ./run.sh reproduce [target]   set up .venv if needed, then `dvc repro` (default target: the main line, `report`)
#   ./run.sh test [pytest args]   set up .venv if needed, then the whole test suite (fast + slow)
# Both install what they need when it is missing. STM_VENV overrides the environment folder.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${STM_VENV:-.venv}"
stamp="$VENV/.stm-installed"

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  # reinstall only when the pins change
  if [ ! -f "$stamp" ] || ! cmp -s requirements.txt "$stamp"; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -r requirements.txt   # torch is pinned first: the CPU build here
    "$VENV/bin/python" -m pip install -q --no-deps -e .
    cp requirements.txt "$stamp"
  fi
  export PATH="$PWD/$VENV/bin:$PATH"
  export DVC_NO_ANALYTICS=1 HF_HUB_OFFLINE=1
}

cmd="${1:-}"; shift || true
case "$cmd" in
  reproduce)
    setup
    dvc repro "${1:-report}"
    ;;
  test)
    setup
    python -m pytest "$@"
    ;;
  *)
    echo "usage: ./run.sh reproduce [dvc target] | ./run.sh test [pytest args]" >&2
    exit 2
    ;;
esac
