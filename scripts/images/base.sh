#!/usr/bin/env bash
# Make the local base image (a Debian bookworm minbase root file system) that stands in for a registry's
# debian:bookworm-slim where no image registry is reachable; print its image id (the pin the builds use).
#
#   scripts/images/base.sh            # -> sha256 id of localhost/debian-base:bookworm on stdout
#
# Cached twice, so a second call takes a second: the image in buildah's storage, and the root file
# system tarball in $KFKIT_IMAGE_CACHE (default /var/cache/kfkit-images) for when the storage was wiped.
set -euo pipefail

BASE_NAME="${KFKIT_BASE_NAME:-localhost/debian-base:bookworm}"
CACHE="${KFKIT_IMAGE_CACHE:-/var/cache/kfkit-images}"
SUITE=bookworm
# The mirror this machine's apt sources name (deb822 or one-line format); deb.debian.org otherwise.
MIRROR="${KFKIT_DEBIAN_MIRROR:-$(
  { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' || true
    grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' || true; } \
  | awk '/\/debian\/?$/ && !m {print; m=1} END {if (!m) print "http://deb.debian.org/debian"}')}"
TARBALL="$CACHE/rootfs-$SUITE-minbase.tar"

log() { echo "[base] $*" >&2; }

if id=$(buildah inspect --type image --format '{{.FromImageID}}' "$BASE_NAME" 2>/dev/null); then
  log "$BASE_NAME cached ($id)"
  echo "sha256:$id"
  exit 0
fi

mkdir -p "$CACHE"
if [[ ! -s "$TARBALL" ]]; then
  root="$CACHE/rootfs.tmp"
  rm -rf "$root"
  log "debootstrap --variant=minbase $SUITE from $MIRROR (a few minutes)"
  debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >&2
  # What a slim registry image leaves out: apt lists, caches, docs and man pages.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
  tar -C "$root" --numeric-owner -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
  rm -rf "$root"
else
  log "root file system cached: $TARBALL"
fi

log "importing $TARBALL as $BASE_NAME"
ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
mnt=$(buildah mount "$ctr")
tar -C "$mnt" --numeric-owner -xf "$TARBALL"
buildah umount "$ctr" >/dev/null
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash \
  --label org.opencontainers.image.title="debian $SUITE minbase (local stand-in for debian:$SUITE-slim)" "$ctr"
buildah commit --quiet "$ctr" "$BASE_NAME" >/dev/null
id=$(buildah inspect --type image --format '{{.FromImageID}}' "$BASE_NAME")
log "$BASE_NAME = sha256:$id"
echo "sha256:$id"
