# The JupyterLab side panel: built by labextension/build.sh when its sources changed
# (npm ci, tsc, jupyter-builder), then linked into the venv where JupyterLab looks for it.
# Wheels carry it built (hatch_build.py); this is for the editable install above.
command -v node >/dev/null && command -v npm >/dev/null || {
  echo "node and npm are needed to build the JupyterLab side panel (labextension/): install Node 20 with npm" >&2
  exit 1
}
PATH="$VENV/bin:$PATH" bash "$ROOT/labextension/build.sh"
labextensions="$VENV/share/jupyter/labextensions"
if [ "$(readlink "$labextensions/jupyter-exec" 2>/dev/null)" != "$ROOT/labextension/dist" ]; then
  step "link the side panel into $labextensions"
  mkdir -p "$labextensions"
  rm -rf "$labextensions/jupyter-exec"
  ln -s "$ROOT/labextension/dist" "$labextensions/jupyter-exec"
fi
listed=$("$VENV/bin/jupyter" labextension list 2>&1 | sed 's/\x1b\[[0-9;]*m//g')
grep -q "jupyter-exec v.* enabled OK" <<<"$listed" || {
  echo "JupyterLab does not list the side panel as enabled and OK; see: $VENV/bin/jupyter labextension list" >&2
  exit 1
}
