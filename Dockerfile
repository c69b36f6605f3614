# folio's two services in one image: folio-bookstore and folio-analytics (pick one with
# the container's command). Built by compose.yaml; `docker build -t folio .` works too.
#
# Build arguments (the defaults need an image registry):
#   RUST_IMAGE     the toolchain the binaries are compiled with
#   RUNTIME_IMAGE  the Debian 12 the services run on
#   BINARIES       compiled (default): compile the workspace in the image;
#                  prebuilt: copy prebuilt/folio-bookstore and prebuilt/folio-analytics
#                  from the build context instead, release binaries built on a Debian 12
#                  host (scripts/images does this, with a local RUNTIME_IMAGE, on machines
#                  without a registry)
# BuildKit builds only the stages the chosen BINARIES needs.

ARG RUST_VERSION=1.95
ARG RUST_IMAGE=rust:${RUST_VERSION}-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG BINARIES=compiled

# --- compiled: the workspace built in the image -------------------------------------------
FROM ${RUST_IMAGE} AS compiled
WORKDIR /src
COPY . .
# The caches keep downloaded crates and compiled dependencies between builds; the binaries
# are copied out because the target cache is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p folio-bookstore -p folio-analytics \
    && mkdir -p /out \
    && cp target/release/folio-bookstore target/release/folio-analytics /out/

# --- prebuilt: binaries from the build context --------------------------------------------
FROM scratch AS prebuilt
COPY prebuilt/folio-bookstore prebuilt/folio-analytics /out/

FROM ${BINARIES} AS binaries

# --- run ---------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}
# ca-certificates for TLS to brokers and databases; curl for the bookstore's healthcheck.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin folio \
    && mkdir -p /var/lib/folio && chown folio /var/lib/folio
COPY --from=binaries /out/folio-bookstore /out/folio-analytics /usr/local/bin/
USER folio
# The bookstore's local folder (its event spool), writable by the service's user.
WORKDIR /var/lib/folio
ENV HTTP_ADDR=0.0.0.0:8080 \
    FOLIO_DATA_DIR=/var/lib/folio \
    RUST_LOG=info
EXPOSE 8080
# Exec form: the service is PID 1 and gets SIGTERM itself, so it drains, commits and
# leaves its consumer group on `docker stop`.
CMD ["folio-bookstore"]
