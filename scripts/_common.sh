# Shared by scripts/demo, scripts/test and scripts/bench: sourced, not run.
# Installs what is missing (Debian packages, the virtualenv and the package, the browser tests' npm
# packages) and nothing else.

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
  digest="$(cat "$ROOT/setup.cfg" "$ROOT/setup.py" | sha256sum | cut -c1-16)"
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

# ensure_npm DIR : DIR/node_modules installed as DIR/package-lock.json pins it (npm ci; npm
# install when there is no lock yet), again only when package.json or the lock changed.
# Node and npm come from Debian when they are missing.
ensure_npm() {
  local dir="$1"
  command -v node >/dev/null || ensure_debs nodejs
  command -v npm >/dev/null || ensure_debs npm
  # package.json's "engines" says which Node the packages need (Debian 12's own nodejs is 18).
  local need have
  need="$(sed -n 's/.*"node": *">= *\([0-9][0-9]*\).*/\1/p' "$dir/package.json")"
  have="$(node -p 'process.versions.node.split(".")[0]')"
  [ -z "$need" ] || [ "$have" -ge "$need" ] \
    || die "${dir#"$ROOT"/} needs Node.js >= $need, found $(node --version): install a newer nodejs (e.g. NodeSource's)"
  local stamp="$dir/node_modules/.iipsrv_py-installed"
  local digest
  digest="$(cat "$dir/package.json" "$dir/package-lock.json" 2>/dev/null | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
    local install=(npm ci)
    [ -f "$dir/package-lock.json" ] || install=(npm install)
    say "installing the npm packages of ${dir#"$ROOT"/} (${install[*]})"
    local logfile="$VENV/npm-install.log"
    if ! (cd "$dir" && "${install[@]}" --no-audit --no-fund) >"$logfile" 2>&1; then
      tail -n 30 "$logfile" >&2
      die "${install[*]} failed in $dir (full log: $logfile)"
    fi
    echo "$digest" > "$stamp"
  fi
}
