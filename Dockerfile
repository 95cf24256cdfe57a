# PAI's local API in a container: the same `python -m pai_local` that `make run` starts, with the
# embedded emulator's state under PAI_STATE_DIR (a named volume in docker-compose.yml), or pointed at an
# external emulator through AWS_ENDPOINT_URL.
FROM python:3.12-slim

# llama-cpp-python is compiled from its sdist, with the same portable CPU flags as `make setup`.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# The hashed lock of the runtime and the local harness, installed before the code so that a code
# change reuses this layer.
COPY requirements/local.txt requirements/local.txt
COPY scripts/llama_wheel.py scripts/llama_wheel.py
RUN PAI_WHEEL_CACHE=/tmp/pai-wheels python scripts/llama_wheel.py --lock requirements/local.txt \
    && pip install --no-cache-dir --require-hashes -r requirements/local.txt \
    && rm -rf /tmp/pai-wheels

COPY pai_core pai_core
COPY handlers handlers
COPY pai_local pai_local
COPY infra infra
COPY models models
COPY web web
# .pai/ (the local API key, and the state that PAI_STATE_DIR names) is the volume at /data, so the
# container keeps both across restarts, as `make run` keeps .pai/.
RUN mkdir -p /data && ln -s /data /app/.pai

# Inside the container the API must listen on all interfaces; compose publishes it on 127.0.0.1 only.
ENV PYTHONPATH=/app \
    PAI_HOST=0.0.0.0 \
    PAI_PORT=8080 \
    PAI_STREAM_PORT=8081 \
    PAI_STATE_DIR=/data/state \
    AWS_ACCESS_KEY_ID=test \
    AWS_SECRET_ACCESS_KEY=test \
    AWS_REGION=us-east-1
VOLUME ["/data"]
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=3)"]
CMD ["python", "-m", "pai_local"]
