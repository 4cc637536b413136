# A second ordinary account for the broker's tests (docs/broker.md): two users of one shared
# machine, jx-user (60-ordinary-user.sh) and jx-user2, each running container cells through the
# broker. Neither is in the docker group: the broker alone opens the engine's socket. The second
# account uses the first one's venv (any account may execute it). Only root makes accounts.
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
fi
