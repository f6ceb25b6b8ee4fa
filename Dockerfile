# The inference service (python -m serve): Litestar on onnxruntime. No TensorFlow in this image.
#
#   docker build -t har-serve .                 # on the official python:3.11-slim
#   docker run --rm -p 8000:8000 -v "$PWD/models:/models:ro" -e HAR_SERVE_TOKEN="$(cat token)" har-serve
#
# Where no registry can be reached, on a base built from Debian's packages (docs/operations.md, "The image"):
#   scripts/build_base_image.sh && scripts/podman.sh build --build-arg BASE=localhost/har-base:bookworm -t har-serve .
#
# The model is mounted (or baked into a derived image) at /models/model.onnx; another path can be
# given with `--model`. The token comes from $HAR_SERVE_TOKEN or the secret file
# /run/secrets/har_serve_token; with neither the service refuses to start.
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HAR_LOG_FORMAT=json PATH=/opt/venv/bin:$PATH

# A virtual environment, the same on both bases: Debian's own Python refuses pip installs into the system
# (PEP 668). The lock was resolved on Python 3.11; a base with another Python stops the build here.
RUN python3 -c "import sys; v = sys.version_info[:2]; assert v == (3, 11), f'the base has Python {sys.version}; requirements.lock wants 3.11'" \
 && python3 -m venv /opt/venv

WORKDIR /app
COPY requirements.lock ./
# Only what serving needs, at the project's pinned versions (the lock file acts as the constraints);
# dask, distributed, tqdm and psutil so that the same image runs `python -m serve.batch` as a Dask worker.
RUN pip install -c requirements.lock numpy pandas scipy PyYAML python-calamine onnx onnxruntime \
        litestar uvicorn httptools uvloop prometheus-client httpx Jinja2 \
        SQLAlchemy alembic psycopg psycopg-binary pyarrow structlog dask distributed tqdm psutil redis

COPY params.yaml ./
COPY har/ har/
COPY serve/ serve/
COPY store/ store/

# The study store's default SQLite file and its fused blobs live under /app/data/store (mount a volume there).
RUN useradd --create-home --uid 10001 serve && mkdir -p data/store/blobs && chown -R serve data
USER serve

EXPOSE 8000
# Ready: model loaded, checksum verified, batcher running (the Kubernetes readinessProbe's route).
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=2)"]

ENTRYPOINT ["python", "-m", "serve", "--host", "0.0.0.0", "--port", "8000", "--token-file", "/run/secrets/har_serve_token"]
CMD ["--model", "/models/model.onnx"]
