# Helpers sourced by scripts/setup and scripts/setup.d/*.sh. Bash only.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${JX_VENV:-$ROOT/.venv}"
CACHE="${JX_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jupyter-exec-setup}"
mkdir -p "$CACHE"

step() { printf '\n==> %s\n' "$*" >&2; }

# apt_install [--no-recommends] PKG...: install the Debian packages not yet installed
# (apt-get update once); --no-recommends leaves out what they only recommend.
apt_install() {
  local missing=() options=()
  if [ "${1:-}" = --no-recommends ]; then
    options+=(--no-install-recommends)
    shift
  fi
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
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${options[@]}" "${missing[@]}" >/dev/null
}

# tree_hash: a hash of this tree's files (tracked and untracked, not ignored), which decides
# when a wheel built from it is out of date. In Python: symlinked folders break sha256sum.
tree_hash() {
  "$VENV/bin/python" - "$ROOT" <<'PY'
import hashlib, os, subprocess, sys
root = sys.argv[1]
listed = subprocess.run(["git", "-C", root, "ls-files", "-co", "--exclude-standard", "-z"],
                        capture_output=True, check=True).stdout.split(b"\0")
digest = hashlib.sha256()
for name in sorted(n for n in listed if n):
    path = os.path.join(root, os.fsdecode(name))
    if os.path.isfile(path) and not os.path.islink(path):
        with open(path, "rb") as source:
            digest.update(name + b"\0" + source.read())
print(digest.hexdigest()[:16])
PY
}

# project_wheel [HASH]: print the path of this tree's wheel, as users get it from PyPI (built
# when the tree changed; kept in $CACHE/wheels/HASH, which checkouts of the same tree share).
project_wheel() {
  local sources="${1:-$(tree_hash)}" wheels="$CACHE/wheels" building
  mkdir -p "$wheels"
  if ! compgen -G "$wheels/$sources/jupyter_exec-*.whl" >/dev/null; then
    step "the project's wheel ($sources)"
    building=$(mktemp -d "$wheels/.building-XXXXXX")  # its own: other checkouts may build the same tree
    PATH="$VENV/bin:$PATH" "$VENV/bin/python" -m pip wheel -q --no-deps -w "$building" "$ROOT" >&2
    mv -T "$building" "$wheels/$sources" 2>/dev/null || rm -rf "$building"  # another got there first
    find "$wheels" -mindepth 1 -maxdepth 1 -mtime +7 -exec rm -rf {} +
  fi
  compgen -G "$wheels/$sources/jupyter_exec-*.whl"
}
