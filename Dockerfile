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

# The OHIF Viewer, fetched and checked once at build time (npm only for that step).
RUN apt-get update && apt-get install -y --no-install-recommends npm \
    && PACS_VIEWER_DIR=/opt/pacs/viewer pacs viewer install \
    && apt-get purge -y npm && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* /root/.npm
ENV PACS_VIEWER_DIR=/opt/pacs/viewer

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/pacs --create-home pacs
USER pacs
WORKDIR /var/lib/pacs
ENV PACS_DATA_DIR=/var/lib/pacs

EXPOSE 11112 8080
CMD ["pacs", "serve"]
