# syntax=docker/dockerfile:1
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY inferno ./inferno
RUN python -m venv /opt/inferno \
 && /opt/inferno/bin/pip install --no-cache-dir .

FROM python:3.11-slim
COPY --from=build /opt/inferno /opt/inferno
COPY config/samples /etc/inferno/samples
ENV PATH=/opt/inferno/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["inferno"]
CMD ["validate", "/etc/inferno/samples/small.yaml"]
