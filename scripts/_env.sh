# Shared by scripts/demo and scripts/test: find Python >= 3.11, make .venv, install the package.
# Usage: source scripts/_env.sh; ensure_venv NAMES   (e.g. "dev,bench" or "demo"; see ensure_venv)
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
  # NAMES: comma-separated dependency groups of pyproject.toml (dev, bench), and "demo" for the
  # devkit's demo extra.  Always the package and servicestage-job-poller-devkit (devkit/),
  # both editable: the checkout's poller/ has the emulator and the demo either way.
  local names="$1" py stamp name list=() devkit="$ROOT/devkit" groups=()
  IFS=, read -r -a list <<<"$names"
  for name in ${list[@]+"${list[@]}"}; do
    case "$name" in
      demo) devkit="$ROOT/devkit[demo]" ;;
      *) groups+=(--group "$ROOT/pyproject.toml:$name") ;;
    esac
  done
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
  stamp="$VENV/.installed-${names:-base}"
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] ||
    [ "$ROOT/devkit/pyproject.toml" -nt "$stamp" ]; then
    say "installing poller and its devkit${names:+ ($names)} into $VENV"
    # pip's and setuptools' chatter goes to a log, shown only when something fails.  pip 25.1
    # is the first to install dependency groups (--group).
    if ! { "$VENV/bin/python" -m pip install -q --upgrade 'pip>=25.1' &&
      "$VENV/bin/python" -m pip install -q -e "$ROOT" -e "$devkit" ${groups[@]+"${groups[@]}"}; } \
      >"$VENV/pip.log" 2>&1; then
      cat "$VENV/pip.log" >&2
      echo "installing the package failed (log above, also in $VENV/pip.log)" >&2
      return 1
    fi
    touch "$stamp"
  fi
}
