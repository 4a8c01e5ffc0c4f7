# syntax=docker/dockerfile:1
# MAMDR serving image: FastAPI + onnxruntime, no torch (the base install `pip install .` never pulls it).
#   docker build -f deploy/serving.Dockerfile -t mamdr-serving:0.1.0 .
#   docker run -p 8000:8000 -v mamdr-artifacts:/artifacts:ro \
#     -e MAMDR_FEATURE_STORE__URL=redis://HOST:6379/0 -e MAMDR_REGISTRY__URL=redis://HOST:6379/1 mamdr-serving:0.1.0

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY . .
RUN /opt/venv/bin/pip install . \
 && if /opt/venv/bin/pip show torch >/dev/null 2>&1; then echo "torch must not be in the serving image" >&2; exit 1; fi \
 && /opt/venv/bin/python -c "import sys, serving; assert 'torch' not in sys.modules"

FROM python:3.11-slim
# Numeric non-root user so Kubernetes' runAsNonRoot can verify it; /artifacts owned by it so a fresh named
# volume inherits the ownership.
RUN groupadd --gid 10001 mamdr \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin mamdr \
 && mkdir -p /artifacts && chown 10001:10001 /artifacts
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MAMDR_HOME=/tmp/mamdr \
    MAMDR_ARTIFACTS_URL=file:///artifacts \
    MAMDR_SERVING__HOST=0.0.0.0 \
    MAMDR_SERVING__PORT=8000 \
    MAMDR_SERVING__INTRA_OP_THREADS=1 \
    OMP_NUM_THREADS=1
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["mamdr"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
