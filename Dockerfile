# The keeper daemon, dry-run by default. Build: docker build -t keeper .
# Run: docker run --rm -v "$PWD/deploy/keeper.toml:/config/keeper.toml:ro" -e KEEPER_RPC_URL=... keeper
# (or docker compose, see docker-compose.yml). The devnet (anvil + npm artifacts) and the
# Solidity compiler are not in this image: `keeper deploy-liquidator` runs from a source checkout.
# Untested on the build machines (Docker client, no engine); tests/test_packaging.py checks the
# keeper commands below and installs the same wheel outside the source tree.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: a venv with the locked dependencies and the keeper wheel ----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/keeper
COPY requirements.lock /src/
RUN /opt/keeper/bin/pip install --no-deps -r /src/requirements.lock
COPY pyproject.toml README.md /src/
COPY keeper /src/keeper
RUN /opt/keeper/bin/pip install --no-deps /src \
 && /opt/keeper/bin/pip check \
 && cd / && /opt/keeper/bin/keeper --help >/dev/null \
 && /opt/keeper/bin/python -c "from keeper import abi; abi.load('ERC20'); abi.custom_errors()"

# -- runtime: the venv only, a non-root user, state in /data ------------------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/keeper/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home --shell /usr/sbin/nologin keeper \
 && mkdir -p /data /config && chown keeper:keeper /data
COPY --from=build /opt/keeper /opt/keeper
USER keeper
WORKDIR /data
# the send journal, the SQLite store and the kill-switch file (keeper.journal, keeper.store_path,
# keeper.kill_switch_file in deploy/keeper.toml.example)
VOLUME ["/data"]
# /metrics, /healthz and the status page ([http] listen = "0.0.0.0:9108" in the config)
EXPOSE 9108
# no curl in the slim image: python's urllib; /healthz answers 503 with the reason when unhealthy
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4)"]
# SIGTERM stops the keeper cleanly (exit 0); a bad config exits 2, an unreachable RPC 3
STOPSIGNAL SIGTERM
ENTRYPOINT ["keeper"]
CMD ["run", "--config", "/config/keeper.toml", "--dry-run"]
