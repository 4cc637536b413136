# Chromium from Debian's packages for the browser tests (never `playwright install`:
# it downloads its own browser). Playwright, JupyterLab and the widget packages come
# with the venv's test extra.
apt_install chromium fonts-liberation
[ -x /usr/bin/chromium ] || { echo "chromium missing after install" >&2; exit 1; }
