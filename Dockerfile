# cnnarena's model server, CPU only, slim. Serves a finished run directory (mounted read-only) over HTTP:
#   docker build -t cnnarena-serve .
#   docker run --rm -p 8000:8000 -v "$PWD/runs/fast:/model:ro" cnnarena-serve
#   curl -F file=@cat.jpg http://127.0.0.1:8000/v1/predict
# Options after the image name go to `cnnarena serve` (e.g. --backend onnx-int8 after `cnnarena export RUN --int8`,
# --cors https://app.example.com, --max-batch 16).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 CNNARENA_CACHE=/tmp/cnnarena-cache

# the CPU build of torch (the default wheel carries CUDA: gigabytes a CPU server never uses)
RUN pip install torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && rm -rf /src

RUN useradd --create-home --uid 10001 cnnarena
USER cnnarena
WORKDIR /home/cnnarena
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v1/health', timeout=4)"
ENTRYPOINT ["cnnarena", "serve", "/model", "--host", "0.0.0.0", "--port", "8000"]
