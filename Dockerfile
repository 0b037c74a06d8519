# Ooda: the same `ooda serve` as the README quick start, as a non-root user, data in a volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 ooda
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY adapters ./adapters
RUN pip install --no-cache-dir .
COPY playbooks ./playbooks
COPY config.example.yaml ./
RUN mkdir -p /app/data && chown ooda:ooda /app/data
USER ooda
VOLUME ["/app/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz')" || exit 1
# Inside a container the server must listen on all interfaces to be reachable through -p.
CMD ["ooda", "serve", "--config", "config.example.yaml", "--host", "0.0.0.0"]
