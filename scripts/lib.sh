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

# tree_hash: a hash of this tree's files as git sees them (tracked, or new and not ignored): a
# stamp of what was built from the tree.
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

# project_wheel: the path of this tree's wheel, as a user gets it from PyPI; built once per
# tree_hash into $CACHE/wheels (shared by checkouts: each builds in a folder of its own, then
# renames it into place), of which the newest few are kept.
project_wheel() {
  local sources built fresh
  sources=$(tree_hash)
  built="$CACHE/wheels/jx-$sources"
  if [ ! -d "$built" ]; then
    mkdir -p "$CACHE/wheels"
    fresh=$(mktemp -d "$CACHE/wheels/.building-$sources-XXXXXX")
    PATH="$VENV/bin:$PATH" "$VENV/bin/python" -m pip wheel -q --no-deps -w "$fresh" "$ROOT" 2>&1 |
      grep -v '^WARNING: Location' >&2 || true
    ls "$fresh"/jupyter_exec-*.whl >/dev/null || { echo "pip wheel made no jupyter_exec wheel from $ROOT" >&2; return 1; }
    mv -T "$fresh" "$built" 2>/dev/null || rm -rf "$fresh"  # another checkout of this tree was first
    ls -dt "$CACHE"/wheels/jx-* | tail -n +9 | xargs -r rm -rf
  fi
  ls "$built"/jupyter_exec-*.whl
}
