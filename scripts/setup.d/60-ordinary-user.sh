# An ordinary account for the tests that must run as most users run Jupyter: jx-user, with
# subordinate ids (rootless containers need them) and a venv it can execute. The venv is made
# from Debian's /usr/bin/python3 (the machine's default Python may live in root's home, which
# other accounts cannot enter) and gets the project as a user gets it from PyPI: a wheel, built
# here from this tree whenever its files change. Only root makes accounts; run as a user, this
# step does nothing (that user is the ordinary user).
if [ "$(id -u)" -eq 0 ]; then
  JX_USER="${JX_USER:-jx-user}"
  USER_VENV="${JX_USER_VENV:-/opt/jupyter-exec/user-venv}"
  apt_install python3-venv uidmap
  if ! id -u "$JX_USER" >/dev/null 2>&1; then
    step "useradd $JX_USER (an ordinary account for the tests)"
    useradd --create-home --shell /bin/bash "$JX_USER"
  fi
  grep -q "^$JX_USER:" /etc/subuid || usermod --add-subuids 200000-265535 "$JX_USER"
  grep -q "^$JX_USER:" /etc/subgid || usermod --add-subgids 200000-265535 "$JX_USER"
  sources=$(tree_hash)
  stamp="$USER_VENV/.jx-wheel-$sources"
  if [ ! -f "$stamp" ]; then
    step "the project's wheel, installed for $JX_USER in $USER_VENV"
    [ -x "$USER_VENV/bin/python" ] || { mkdir -p "$(dirname "$USER_VENV")"; /usr/bin/python3 -m venv "$USER_VENV"; }
    wheel=$(project_wheel "$sources")
    "$USER_VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING' >&2 || true
    "$USER_VENV/bin/python" -m pip install -q --force-reinstall --no-deps "$wheel" >&2
    "$USER_VENV/bin/python" -m pip install -q "$wheel[test]" 2>&1 | grep -v '^WARNING' >&2 || true
    runuser -u "$JX_USER" -- "$USER_VENV/bin/python" -c "import jupyter_exec, ipykernel, pytest" || {
      echo "the venv in $USER_VENV does not work for $JX_USER" >&2; exit 1; }
    rm -f "$USER_VENV"/.jx-wheel-* && touch "$stamp"
  fi
fi
