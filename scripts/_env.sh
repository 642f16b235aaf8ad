# Shared by scripts/demo and scripts/test: find Python >= 3.11, make .venv, install the package.
# Usage: source scripts/_env.sh; ensure_venv EXTRAS   (e.g. "dev" or "demo")
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${POLLER_VENV:-$ROOT/.venv}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root for: $*" >&2; return 1; fi
}

apt_install() {
  command -v apt-get >/dev/null || { echo "apt-get not found; please install: $*" >&2; return 1; }
  if [ -z "${_APT_UPDATED:-}" ]; then as_root apt-get update -qq; _APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

find_python() {
  for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "Python 3.11 or newer is required (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

ensure_venv() {
  local extras="$1" py stamp
  if [ ! -x "$VENV/bin/python" ]; then
    py="$(find_python)"
    say "creating virtualenv $VENV with $py"
    if ! "$py" -m venv "$VENV" 2>/dev/null; then
      # Debian splits venv/ensurepip into python3-venv.
      rm -rf "$VENV"
      apt_install python3-venv
      "$py" -m venv "$VENV"
    fi
  fi
  stamp="$VENV/.installed-${extras:-base}"
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    say "installing poller${extras:+[$extras]} into $VENV"
    # pip's and setuptools' chatter goes to a log, shown only when something fails
    if ! { "$VENV/bin/python" -m pip install -q --upgrade pip &&
      "$VENV/bin/python" -m pip install -q -e "$ROOT${extras:+[$extras]}"; } >"$VENV/pip.log" 2>&1; then
      cat "$VENV/pip.log" >&2
      echo "installing the package failed (log above, also in $VENV/pip.log)" >&2
      return 1
    fi
    touch "$stamp"
  fi
}
