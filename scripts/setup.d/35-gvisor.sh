# gVisor for `%%sandbox --runtime runsc`: Debian's runsc, registered with Docker as the runtime
# `runsc` in /etc/docker/daemon.json (merged with what the file holds), then SIGHUP to dockerd,
# which reloads its runtimes without a restart. The runtime arguments are the ones jupyter-exec
# needs (`jupyter-exec doctor --fix-runtime` prints the same entry):
#   --network=none   this runsc build refuses a container sharing the host's network namespace
#   --host-fifo=open the sandbox talks to the kernel through FIFOs in a bind mount
#   --oci-seccomp    the container's seccomp profile is applied inside the sandbox too
#   --host-uds=open  a --network HOST,... cell reaches its proxy through a Unix socket in a bind mount
apt_install runsc
if [ "$(id -u)" -eq 0 ]; then
  changed=$("$VENV/bin/python" -c 'import sys; from pathlib import Path
from jupyter_exec.backends.container.runtimes import merge
print("changed" if merge(Path(sys.argv[1]), "runsc") else "unchanged")' /etc/docker/daemon.json)
  if [ "$changed" = "changed" ]; then
    step "registered runsc in /etc/docker/daemon.json; SIGHUP to dockerd"
    kill -HUP "$(cat /var/run/docker.pid)"
  fi
  for _ in $(seq 30); do
    docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"' && break
    sleep 1
  done
  docker info --format '{{json .Runtimes}}' | grep -q '"runsc"' || {
    echo "dockerd does not list the runsc runtime after SIGHUP; see /etc/docker/daemon.json" >&2; exit 1; }
fi
