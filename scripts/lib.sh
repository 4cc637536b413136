# Helpers sourced by scripts/setup and scripts/setup.d/*.sh. Bash only.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${JX_VENV:-$ROOT/.venv}"
CACHE="${JX_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jupyter-exec-setup}"
mkdir -p "$CACHE"

step() { printf '\n==> %s\n' "$*" >&2; }

# apt_install PKG...: install the Debian packages not yet installed (apt-get update once).
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]} — install them (as root: apt-get install ${missing[*]})" >&2
    return 1
  fi
  step "apt-get install ${missing[*]}"
  if [ ! -f "$CACHE/.apt-updated" ] || [ -n "$(find "$CACHE/.apt-updated" -mmin +720)" ]; then
    apt-get update -qq && touch "$CACHE/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}
