#!/usr/bin/env bash
# stage.sh CTX BIN: lay out the build context the Dockerfiles in this folder
# expect, from the static binaries in BIN (make images builds them).
#
#   CTX/bin/      the binaries, mode 0755
#   CTX/rootfs/   /etc/passwd and /etc/group (user rbee, uid 10001), the
#                 host's CA certificates, and /tmp with mode 1777
#   CTX/data/     data/, an empty directory the images COPY with
#                 --chown=10001:10001: scratch has no mkdir or chown, and a
#                 named volume mounted on /data starts as a copy of it
set -euo pipefail
ctx=${1:?usage: stage.sh CTX BIN}
bin=${2:?usage: stage.sh CTX BIN}
here=$(cd "$(dirname "$0")" && pwd)
certs=${CA_CERTIFICATES:-/etc/ssl/certs/ca-certificates.crt}

if [ ! -s "$certs" ]; then
  echo "stage.sh: no CA certificates at $certs (apt-get install ca-certificates, or set CA_CERTIFICATES)" >&2
  exit 1
fi
rm -rf "$ctx"
mkdir -p "$ctx/bin" "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp" "$ctx/data/data"
for b in queen rbee hive rbee-worker rbee-healthcheck tools/nats-server; do
  if [ ! -x "$bin/$b" ]; then
    echo "stage.sh: $bin/$b is missing; run make images" >&2
    exit 1
  fi
  install -m 0755 "$bin/$b" "$ctx/bin/"
done
install -m 0644 "$here/rootfs/etc/passwd" "$here/rootfs/etc/group" "$ctx/rootfs/etc/"
install -m 0644 "$certs" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
chmod 1777 "$ctx/rootfs/tmp"
chmod 0755 "$ctx/data/data"
