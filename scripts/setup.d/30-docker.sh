# Docker: the engine, a running daemon, and the sandbox base image (built offline from
# this machine's own Debian mirror, rebuilt only when dockerfiles/ changes).
apt_install docker.io debootstrap ca-certificates
if ! docker info >/dev/null 2>&1; then
  step "start dockerd (log: $CACHE/dockerd.log)"
  setsid nohup dockerd >"$CACHE/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "dockerd did not answer in 60 s; see $CACHE/dockerd.log" >&2; tail -20 "$CACHE/dockerd.log" >&2; exit 1; }
fi
step "sandbox image jupyter-exec/base (skipped when up to date)"
"$VENV/bin/jupyter-exec" images build base --offline --rootfs-cache "$CACHE/rootfs"
