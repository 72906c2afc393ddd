#!/usr/bin/env bash
# Debian packages some tests need and pip cannot bring: ss (iproute2: which address a server binds), wrk
# (the serving benchmark's HTTP load generator), prometheus (tests run it as a plain process on 127.0.0.1 to
# check the KEDA, canary, dashboard and alert queries), redis-server (Feast's Redis online store), buildah and
# debootstrap (the images are built and run daemonless), java (PySpark's local[*] engine). Installs only what is missing; needs root (CI runs as root).
set -euo pipefail
need=()
command -v ss >/dev/null || need+=(iproute2)
command -v wrk >/dev/null || need+=(wrk)
command -v prometheus >/dev/null || need+=(prometheus)
command -v redis-server >/dev/null || need+=(redis-server)
command -v buildah >/dev/null || need+=(buildah)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
if ((${#need[@]} == 0)); then
    exit 0
fi
if [[ $(id -u) != 0 ]]; then
    echo "install_system_tools.sh: missing ${need[*]}; run: sudo apt-get install ${need[*]}" >&2
    exit 1
fi
echo "==> apt-get install ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
