# PAI's local API in a container: the same `python -m pai_local` that `make run` starts, pointed at
# the emulator service of docker-compose.yml through AWS_ENDPOINT_URL.
FROM python:3.12-slim

# llama-cpp-python compiles llama.cpp on install.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY pai_core pai_core
COPY handlers handlers
COPY pai_local pai_local
COPY infra infra
COPY models models
RUN pip install --no-cache-dir -e ".[local]"

# Inside the container the API must listen on all interfaces; compose publishes it on 127.0.0.1 only.
ENV PAI_HOST=0.0.0.0 \
    PAI_PORT=8080 \
    AWS_ACCESS_KEY_ID=test \
    AWS_SECRET_ACCESS_KEY=test \
    AWS_REGION=us-east-1
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=3)"]
CMD ["python", "-m", "pai_local"]
