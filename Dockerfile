# The kfkit image: every pipeline step and the KServe predictor run in it on a cluster.
# Build: docker build -t ghcr.io/kfkit/kfkit:0.1.0 .   (not built in CI: no Docker engine there)
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/kfkit

# Dependencies first, so a code change does not re-install them. The lock pins torch's CPU build;
# use a CUDA base image and drop the extra index for GPU nodes.
COPY requirements/ requirements/
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu \
        -r requirements/main.in -c requirements/main.lock

COPY setup.cfg pyproject.toml README.md ./
COPY kfkit/ kfkit/
COPY pipelines/ pipelines/
COPY components/ components/
COPY serving/ serving/
COPY configs/ configs/
RUN pip install --no-deps . && useradd --uid 1000 --create-home kfkit
# Published versions record the code version in lineage.json; an image has no .git, so pass it in:
#   docker build --build-arg KFKIT_GIT_COMMIT=$(git rev-parse HEAD) …
ARG KFKIT_GIT_COMMIT=""
ENV KFKIT_GIT_COMMIT=${KFKIT_GIT_COMMIT}

USER 1000
EXPOSE 8080 8081 8500
ENTRYPOINT ["kfkit"]
CMD ["--help"]
