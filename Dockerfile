# The keeper daemon. The devnet (anvil + npm artifacts) is for local use and tests and is
# not part of this image. Not built in CI (no Docker engine on the build machines).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY keeper ./keeper
COPY abis ./abis
COPY config ./config
RUN pip install --no-cache-dir . && useradd --create-home keeper
USER keeper
ENTRYPOINT ["keeper"]
CMD ["run", "--config", "/app/config/devnet.toml", "--dry-run"]
