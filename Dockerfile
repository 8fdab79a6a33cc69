# syntax=docker/dockerfile:1
# The llmcanary operator image: `docker build -t llmcanary:0.1.0 .` (see docs/image.md).
#
# Two stages on the same base image. The builder runs scripts/build-operator-venv.sh, the one
# install path (tests/integration/test_image_steps.py runs the same script): it builds the
# wheel, installs it without extras into a virtual environment at /opt/llmcanary and checks
# that the model extra (the heavy GPU-side packages) and the development stack (the
# llmcanary-dev distribution in dev/, never copied here) are absent. The runtime stage copies
# only that environment. Both stages must use the same base image: the environment's
# bin/python points at the base image's interpreter.
#
# Pinned by tag; pin a digest for reproducible builds with
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>
# (no digest is written here: it could not be verified where this file was written).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY scripts/build-operator-venv.sh scripts/
RUN bash scripts/build-operator-venv.sh --no-cache /opt/llmcanary

FROM ${PYTHON_IMAGE} AS runtime
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="llmcanary" \
      org.opencontainers.image.description="Kubernetes operator that rolls out LLMs served by NVIDIA Triton as canaries" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
COPY --from=builder /opt/llmcanary /opt/llmcanary
# Read-only root filesystem: no bytecode written at run time (pip compiled it at install),
# logs unbuffered to stdout. The only writable path the process may need is $TMPDIR (/tmp):
# the Kubernetes clients write inline kubeconfig certificates there; the chart mounts an
# emptyDir at /tmp.
ENV PATH=/opt/llmcanary/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
# 8080: kopf's liveness endpoint (--liveness); 8090: Prometheus metrics (--metrics-port 8090,
# as the chart passes it; not 8000, Triton's HTTP port).
EXPOSE 8080 8090
ENTRYPOINT ["llmcanary"]
CMD ["run", "--all-namespaces", "--log-format", "json", "--liveness", "http://0.0.0.0:8080/healthz"]
