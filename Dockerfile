# The archive's image: `pacs serve` on port 11112. See docker-compose.yml for a full setup
# and docs/configuration.md for the PACS_* settings.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY pacs ./pacs
RUN pip install . && rm -rf /src

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/pacs --create-home pacs
USER pacs
WORKDIR /var/lib/pacs
ENV PACS_DATA_DIR=/var/lib/pacs

EXPOSE 11112
CMD ["pacs", "serve"]
