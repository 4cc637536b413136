# Rootless Podman for the ordinary account (made by 60-ordinary-user.sh): the engine the container
# backend picks for a user who is not in the docker group. Podman stores each user's images
# itself, so the sandbox image built by root's Docker (30-docker.sh) is copied in with
# `docker save` + `podman load` whenever it changed (the image's source-hash label says so).
# Storage: overlay (native, in the user namespace) when this kernel allows it; Podman would
# otherwise fall back to vfs, which copies the whole image for every container (seconds each).
if [ "$(id -u)" -eq 0 ]; then
  JX_USER="${JX_USER:-jx-user}"
  apt_install podman uidmap
  as_user() { (cd / && runuser -u "$JX_USER" -- env -i HOME="$(getent passwd "$JX_USER" | cut -d: -f6)" \
    USER="$JX_USER" PATH=/usr/bin:/bin "$@"); }
  conf="$(getent passwd "$JX_USER" | cut -d: -f6)/.config/containers/storage.conf"
  if [ ! -f "$conf" ] && as_user unshare -rm true 2>/dev/null; then
    step "podman storage for $JX_USER: overlay"
    as_user mkdir -p "$(dirname "$conf")"
    as_user sh -c "printf '[storage]\ndriver = \"overlay\"\n' > '$conf'"
    as_user podman system reset --force >/dev/null 2>&1 || true
  fi
  image=jupyter-exec/base:latest
  label='{{index .Config.Labels "jupyter-exec.source-hash"}}'
  want=$(docker image inspect --format "$label" "$image")
  have=$(as_user podman image inspect --format "$label" "$image" 2>/dev/null || true)
  if [ "$want" != "$have" ]; then
    step "copy $image into $JX_USER's podman (docker save | podman load)"
    archive=$(mktemp -p /tmp jx-image-XXXXXX.tar)
    docker save -o "$archive" "$image" && chmod 644 "$archive"
    as_user podman load -q -i "$archive" >/dev/null
    rm -f "$archive"
  fi
  [ "$(as_user podman image inspect --format "$label" "$image" 2>/dev/null)" = "$want" ] || {
    echo "$JX_USER's podman does not have $image after loading it" >&2; exit 1; }
fi
