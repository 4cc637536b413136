# The project's virtual environment, with the test extras, as an editable install.
apt_install util-linux python3-venv
if [ ! -x "$VENV/bin/python" ]; then
  step "create $VENV"
  python3 -m venv "$VENV"
fi
stamp="$VENV/.jx-installed-$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  step "pip install -e .[test,lint]"
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' >&2 || true
  "$VENV/bin/python" -m pip install -q -e "$ROOT[test,lint]" 2>&1 | grep -v '^WARNING: Location' >&2 || true
  "$VENV/bin/python" -c "import jupyter_exec, ipykernel, nbclient, mypy, ruff"
  rm -f "$VENV"/.jx-installed-*
  touch "$stamp"
fi
