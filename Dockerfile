# syntax=docker/dockerfile:1
# inferno: the control-plane daemon. Two stages: the build stage installs inferno and its wheels into a
# virtual environment; the final stage holds only that environment on a slim Python, runs as a non-root
# user and writes nothing outside /tmp, so it runs with a read-only root filesystem.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY inferno ./inferno
# Wheels are preferred; neither stage has a compiler, so a dependency that needs one fails the build.
# The bytecode is compiled here, since the final image cannot write it at run time.
RUN python -m venv /opt/inferno \
 && /opt/inferno/bin/pip install --no-cache-dir --prefer-binary . \
 && /opt/inferno/bin/python -m compileall -q /opt/inferno/lib

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="inferno" \
      org.opencontainers.image.description="Cost-aware, SLO-driven autoscaling of LLM inference servers on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 65532 inferno \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin inferno
COPY --from=build /opt/inferno /opt/inferno
COPY config/samples /etc/inferno/samples
ENV PATH=/opt/inferno/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
WORKDIR /tmp
USER 65532:65532
EXPOSE 8080
# /healthz answers while the process runs (the port follows INFERNO_METRICS_PORT).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('INFERNO_METRICS_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["inferno", "run"]
# Safe by default: plan the bundled sample system and change nothing. The Kubernetes manifests in
# deploy/ replace these arguments.
CMD ["--system", "/etc/inferno/samples/small.yaml", "--dry-run"]
