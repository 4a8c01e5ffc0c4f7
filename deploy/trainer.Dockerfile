# syntax=docker/dockerfile:1
# MAMDR trainer image: the platform with the [trainer] extra (torch, onnxscript, scikit-learn, matplotlib).
#   docker build -f deploy/trainer.Dockerfile -t mamdr-trainer:0.1.0 .
# CPU torch: the trainer runs on CPU (gloo for torch.distributed), so by default torch comes from PyTorch's
# CPU-only wheel index, a far smaller image than the default Linux wheel with its CUDA libraries.
# For GPUs (nccl), build with an empty index to get the CUDA wheel:
#   docker build -f deploy/trainer.Dockerfile --build-arg TORCH_INDEX_URL= -t mamdr-trainer:0.1.0-cuda .
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

FROM python:3.11-slim AS build
ARG TORCH_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
RUN if [ -n "$TORCH_INDEX_URL" ]; then /opt/venv/bin/pip install --index-url "$TORCH_INDEX_URL" "torch>=2.3"; fi
WORKDIR /src
COPY . .
# torch is already satisfied above, so this adds only the platform and the other trainer dependencies.
RUN /opt/venv/bin/pip install ".[trainer]" \
 && /opt/venv/bin/python -c "import torch, trainer; print('torch', torch.__version__)"

FROM python:3.11-slim
RUN groupadd --gid 10001 mamdr \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin mamdr \
 && mkdir -p /artifacts && chown 10001:10001 /artifacts
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MAMDR_HOME=/tmp/mamdr \
    MAMDR_ARTIFACTS_URL=file:///artifacts
USER 10001:10001
WORKDIR /tmp
# 9100: Prometheus metrics; 29500: torch.distributed rendezvous when run under torchrun.
EXPOSE 9100 29500
HEALTHCHECK --interval=30s --timeout=3s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=2)"]
ENTRYPOINT ["mamdr"]
CMD ["trainer", "run", "--metrics-host", "0.0.0.0", "--metrics-port", "9100"]
