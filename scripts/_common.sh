# Shared by scripts/demo, scripts/test and scripts/bench: sourced, not run.
# Installs what is missing (Debian packages, the virtualenv and the package) and nothing else.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${IIPSRV_PY_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ensure_debs PACKAGE... : install the Debian packages that are not installed yet.
ensure_debs() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
    sudo="sudo"
  fi
  say "installing Debian packages: ${missing[*]}"
  # Keep the packages' own services (nginx on port 80, memcached) from starting: the tests
  # and the demo start private instances on loopback ports of their own.
  local policy=/usr/sbin/policy-rc.d created=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy" && created=1
  fi
  $sudo apt-get update -qq >/dev/null || say "apt-get update failed; trying with the cached package lists"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { [ -n "$created" ] && $sudo rm -f "$policy"; die "apt-get install failed for: ${missing[*]}"; }
  [ -n "$created" ] && $sudo rm -f "$policy"
  return 0
}

# ensure_venv [EXTRAS] : the project's virtualenv with the package installed (editable).
ensure_venv() {
  local extras="${1:-}"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating the virtualenv in $VENV"
    "$PYTHON" -m venv "$VENV" 2>/dev/null || { ensure_debs python3-venv && "$PYTHON" -m venv "$VENV"; }
  fi
  local spec="$ROOT"
  [ -n "$extras" ] && spec="$ROOT[$extras]"
  # Reinstall only when the declared dependencies changed since the last install.
  local stamp="$VENV/.iipsrv_py-installed-$extras"
  local digest
  digest="$(cat "$ROOT/setup.cfg" "$ROOT/setup.py" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
  # An install with the test extras is a plain install too: scripts/demo runs in the
  # virtualenv scripts/test set up without installing anything again.
  local with_tests="$VENV/.iipsrv_py-installed-test"
  if [ -z "$extras" ] && [ -f "$with_tests" ] && [ "$(cat "$with_tests")" = "$digest" ]; then
    return 0
  fi
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
    say "installing iipsrv_py${extras:+ with [$extras]} and its dependencies"
    local logfile="$VENV/pip-install.log"
    if ! { "$VENV/bin/python" -m pip install --upgrade pip && "$VENV/bin/python" -m pip install -e "$spec"; } \
        >"$logfile" 2>&1; then
      tail -n 30 "$logfile" >&2
      die "pip install failed (full log: $logfile)"
    fi
    echo "$digest" > "$stamp"
  fi
}
