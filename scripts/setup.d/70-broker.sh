# What the broker's tests need (docs/broker.md): a second ordinary account, jx-user2, beside
# jx-user (60-ordinary-user.sh), both running container cells through the broker and neither in
# the docker group (the broker alone opens the engine's socket); and a real JupyterHub for the
# hub-service mode: jupyterhub in the project's venv (the hub) and in the users' venv (their
# servers, jupyterhub-singleuser), and configurable-http-proxy from npm. Only root makes
# accounts and installs the proxy; run as a user, this step installs jupyterhub in the venv only.
JX_USER_VENV_DIR="${JX_USER_VENV:-/opt/jupyter-exec/user-venv}"
if ! "$VENV/bin/python" -c "import jupyterhub" 2>/dev/null; then
  step "pip install jupyterhub (the broker's hub-service tests)"
  "$VENV/bin/python" -m pip install -q jupyterhub 2>&1 | grep -v '^WARNING' >&2 || true
  "$VENV/bin/python" -c "import jupyterhub" || { echo "jupyterhub did not install in $VENV" >&2; exit 1; }
fi
if [ "$(id -u)" -eq 0 ]; then
  JX_USER2="${JX_USER2:-jx-user2}"
  if ! id -u "$JX_USER2" >/dev/null 2>&1; then
    step "useradd $JX_USER2 (a second ordinary account, for the broker's tests)"
    useradd --create-home --shell /bin/bash "$JX_USER2"
  fi
  for account in "${JX_USER:-jx-user}" "$JX_USER2"; do
    if id -nG "$account" | tr ' ' '\n' | grep -qx docker; then
      echo "$account is in the docker group (root-equivalent): the broker's tests need ordinary accounts" >&2
      exit 1
    fi
  done
  if [ ! -x "$JX_USER_VENV_DIR/bin/jupyterhub-singleuser" ]; then
    step "pip install jupyterhub in $JX_USER_VENV_DIR (the users' servers under the hub)"
    "$JX_USER_VENV_DIR/bin/python" -m pip install -q jupyterhub 2>&1 | grep -v '^WARNING' >&2 || true
    [ -x "$JX_USER_VENV_DIR/bin/jupyterhub-singleuser" ] || { echo "jupyterhub did not install in $JX_USER_VENV_DIR" >&2; exit 1; }
  fi
  if ! command -v configurable-http-proxy >/dev/null; then
    step "npm install -g configurable-http-proxy (the hub's proxy)"
    command -v npm >/dev/null || apt_install npm
    npm install -g --silent configurable-http-proxy >&2
    command -v configurable-http-proxy >/dev/null || { echo "configurable-http-proxy did not install" >&2; exit 1; }
  fi
fi
