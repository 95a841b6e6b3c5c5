# Sourced by the scripts with `run` or `dev`: make (once) and use the project's virtual environment in .venv,
# holding exactly the versions of requirements/$1.lock (scripts/lock writes it), so every machine runs what CI
# tested.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GATEWAY_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
LOCK="$ROOT/requirements/$1.lock"
stamp="$VENV/.installed-$(cat "$ROOT/pyproject.toml" "$LOCK" | sha256sum | cut -c1-16)-$1"
if [ "$1" = run ] && [ -f "${stamp%-run}-dev" ]; then
  stamp="${stamp%-run}-dev"  # the dev install holds everything a run needs
fi
if [ ! -f "$stamp" ]; then
  # The first run makes the environment and installs everything (a minute or more on a Raspberry Pi): say so, or
  # it looks hung.
  echo "installing dependencies into ${VENV/#$ROOT\//} (first run only; this takes a minute)…" >&2
fi
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
    # Debian and Ubuntu ship Python without ensurepip (the python3-venv package): make the environment without
    # pip and let the system's pip install into it (`pip --python`, pip 22.3 or newer).
    rm -rf "$VENV"
    if ! "$PY" -m venv --without-pip "$VENV"; then
      echo "error: $PY cannot make a virtual environment; install python3-venv (apt install python3-venv)" >&2
      exit 1
    fi
  fi
fi
if "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  pip=("$VENV/bin/python" -m pip)
else
  pip=("$PY" -m pip --python "$VENV/bin/python")
fi
if [ ! -f "$stamp" ]; then
  # The lock lists every package with its dependencies already resolved: --no-deps installs exactly that (pip and
  # the build backend included, so the project builds without fetching anything unpinned), and `pip check` then
  # catches a lock that lacks a dependency pyproject.toml gained.
  "${pip[@]}" install --quiet --disable-pip-version-check --no-deps -r "$LOCK"
  "${pip[@]}" install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT"
  if ! conflicts="$("${pip[@]}" check --disable-pip-version-check)"; then
    echo "$conflicts" >&2
    echo "error: pip check failed (above): if pyproject.toml changed, run scripts/lock; else remove $VENV and retry" >&2
    exit 1
  fi
  touch "$stamp"
  echo "installed; the \`gateway\` command is $VENV/bin/gateway (or scripts/gateway)" >&2
fi
export PATH="$VENV/bin:$PATH"
