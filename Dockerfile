# syntax=docker/dockerfile:1
# folio's two services in one image: folio-bookstore and folio-analytics (pick one with
# the container's command). Built by compose.yaml; `docker build -t folio .` works too.

ARG RUST_VERSION=1.95

# --- build -------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
# The caches keep downloaded crates and compiled dependencies between builds; the binaries
# are copied out because the target cache is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p folio-bookstore -p folio-analytics \
    && mkdir -p /out \
    && cp target/release/folio-bookstore target/release/folio-analytics /out/

# --- run ---------------------------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates for TLS to brokers and databases; curl for the bookstore's healthcheck.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin folio
COPY --from=build /out/folio-bookstore /out/folio-analytics /usr/local/bin/
USER folio
ENV HTTP_ADDR=0.0.0.0:8080 \
    RUST_LOG=info
EXPOSE 8080
# Exec form: the service is PID 1 and gets SIGTERM itself, so it drains, commits and
# leaves its consumer group on `docker stop`.
CMD ["folio-bookstore"]
