#!/usr/bin/env bash
# Build kfkit's two images daemonless with buildah: REGISTRY/kfkit:TAG (Dockerfile: pipeline components and
# the predictor) and REGISTRY/kfkit-drift:TAG (Dockerfile.drift: the drift detector).
#
#   scripts/build-images.sh --registry ghcr.io/kfkit --tag 0.1.0      # or: make images REGISTRY=… TAG=…
#   scripts/build-images.sh --registry localhost/kfkit --tag dev --only main
#
# Options: --registry REG (default $REGISTRY or localhost/kfkit), --tag TAG (default $TAG or dev),
# --only main|drift, --force (build even when up to date). Environment: KFKIT_IMAGE_CACHE (default
# /var/cache/kfkit-images: base root file system, pip download cache), KFKIT_HOST_CA (CA bundle pip needs;
# default the system bundle), KFKIT_WHEELS (a folder of local wheels, default /opt/wheels when present).
#
# Caching: an image whose org.kfkit.inputs label equals the hash of its inputs (Dockerfile, lock files, the
# code it copies, the base image, the commit) is not rebuilt; otherwise `buildah bud --layers` rebuilds
# from the first changed step, so a code change reuses the dependency layers and a lock change does not.
# The base is a debootstrap bookworm minbase imported by scripts/images/base.sh, pinned by its id.
# Host files pip needs reach the build as RUN-time mounts (--volume), never as layers.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REGISTRY="${REGISTRY:-localhost/kfkit}"
TAG="${TAG:-dev}"
ONLY=""
FORCE=0
CACHE="${KFKIT_IMAGE_CACHE:-/var/cache/kfkit-images}"
HOST_CA="${KFKIT_HOST_CA:-/etc/ssl/certs/ca-certificates.crt}"
WHEELS="${KFKIT_WHEELS:-$([[ -d /opt/wheels ]] && echo /opt/wheels || true)}"

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
log() { echo "[images] $*" >&2; }
die() { echo "build-images.sh: $*" >&2; exit 2; }

while (($#)); do
  case "$1" in
    --registry) REGISTRY="${2:?--registry needs a value, e.g. ghcr.io/kfkit}"; shift 2 ;;
    --tag) TAG="${2:?--tag needs a value, e.g. 0.1.0}"; shift 2 ;;
    --only) ONLY="${2:?--only needs main or drift}"; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1'; see --help" ;;
  esac
done
[[ -z "$ONLY" || "$ONLY" == main || "$ONLY" == drift ]] || die "--only '$ONLY': use main or drift"
[[ "$REGISTRY" =~ ^[a-z0-9._:/-]+$ ]] || die "--registry '$REGISTRY': lower-case host/path only, e.g. ghcr.io/kfkit"
[[ "$TAG" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "--tag '$TAG': letters, digits, '_', '.', '-' (max 128)"
command -v buildah >/dev/null || die "buildah is missing: run scripts/install_system_tools.sh (apt-get install buildah debootstrap)"
[[ -r "$HOST_CA" ]] || die "CA bundle '$HOST_CA' not readable; set KFKIT_HOST_CA to the bundle pip should trust"

cd "$REPO"
COMMIT="$(git rev-parse HEAD 2>/dev/null || echo "")"
DIRTY=false
if [[ -n "$COMMIT" && -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
  DIRTY=true
  log "warning: the checkout has uncommitted changes; lineage will name $COMMIT all the same"
fi

BASE_ID="$(scripts/images/base.sh)"

# The build-time pip settings, one read-write mount on the base image's empty /mnt (Dockerfile:
# PIP_CONFIG_FILE=/mnt/pip.conf): pip.conf and the download cache live in $CACHE/build-mounts; the CA bundle
# and the wheel folder are mounted read-only inside it, so their mount points are made on the host, and
# no layer gets as much as an empty file from any of them.
MOUNTS="$CACHE/build-mounts"
mkdir -p "$MOUNTS/pip-cache"
{
  echo "[global]"
  echo "cert = /mnt/host-ca.crt"
  [[ -n "$WHEELS" ]] && echo "find-links = /mnt/wheels"
  echo "cache-dir = /mnt/pip-cache"
  echo "timeout = 180"
} > "$MOUNTS/pip.conf"
VOLUMES=(--volume "$MOUNTS:/mnt" --volume "$HOST_CA:/mnt/host-ca.crt:ro")
[[ -n "$WHEELS" ]] && VOLUMES+=(--volume "$WHEELS:/mnt/wheels:ro")

# sha256 of everything one image is made from (what its Dockerfile copies, per .containerignore).
inputs_hash() {
  local dockerfile="$1" env="$2"
  {
    echo "base $BASE_ID commit $COMMIT dirty $DIRTY"
    find "$dockerfile" .containerignore "requirements/$env.in" "requirements/$env.lock" setup.cfg pyproject.toml \
      README.md kfkit pipelines components serving configs -type f \
      ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-64
}

build() {
  local name="$1" dockerfile="$2" env="$3"
  local image="$REGISTRY/$name:$TAG" hash started seconds replaced
  hash="$(inputs_hash "$dockerfile" "$env")"
  if ((FORCE == 0)) && [[ "$(buildah inspect --type image --format '{{index .ImageAnnotations "org.kfkit.inputs"}}{{index .OCIv1.Config.Labels "org.kfkit.inputs"}}' "$image" 2>/dev/null || true)" == "$hash" ]]; then
    log "$image is up to date (inputs ${hash:0:12})"
    echo "$image"
    return
  fi
  log "building $image from $dockerfile (base $BASE_ID, commit ${COMMIT:-unknown}, inputs ${hash:0:12})"
  replaced="$(buildah inspect --type image --format '{{.FromImageID}}' "$image" 2>/dev/null || true)"
  started=$(date +%s)
  buildah bud --isolation chroot --layers --format oci -f "$dockerfile" -t "$image" \
    --build-arg "BASE_IMAGE=$BASE_ID" --build-arg "KFKIT_GIT_COMMIT=$COMMIT" \
    --label "org.kfkit.inputs=$hash" --label "org.kfkit.git-dirty=$DIRTY" \
    "${VOLUMES[@]}" . >&2
  seconds=$(($(date +%s) - started))
  log "built $image in ${seconds}s, $(buildah images --format '{{.Size}}' "$image" | head -1)"
  # The image this one replaces, now untagged, and the layers only it used (after a lock change, GBs);
  # layers the new image shares stay, and so does the layer cache of the new build.
  if [[ -n "$replaced" && "$replaced" != "$(buildah inspect --type image --format '{{.FromImageID}}' "$image")" ]] \
     && buildah rmi "$replaced" >/dev/null 2>&1; then
    log "removed the image it replaces (${replaced:0:12})"
  fi
  echo "$image"
}

[[ "$ONLY" == drift ]] || build kfkit Dockerfile main
[[ "$ONLY" == main ]] || build kfkit-drift Dockerfile.drift drift
