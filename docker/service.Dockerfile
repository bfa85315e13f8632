# The writer and the reader: one Dockerfile, one final target per service.
#
#   docker build -f docker/service.Dockerfile --target writer -t ledger-writer .
#   docker build -f docker/service.Dockerfile --target reader -t ledger-reader .
#
# (docker-compose.yml does the same with `build.target`; without --target you get the reader,
# the last stage.) Both targets share every build stage: the dependencies are compiled once
# (cargo-chef: a layer that changes only when Cargo.toml or Cargo.lock do), the workspace is
# compiled once, and each target copies its one binary into the same small runtime. Two
# Dockerfiles would duplicate all of this and could drift apart.
#
# Build context: the repository root. .dockerignore lets in only the Cargo workspace.
# No `# syntax=` line and no BuildKit-only instruction (RUN --mount, heredocs): BuildKit would
# look the syntax frontend up in a registry, and the classic builder (DOCKER_BUILDKIT=0,
# Compose 1.29) must build it too, so an air-gapped build needs only the base images.
# No database is needed: sqlx checks no queries at compile time here, and `sqlx::migrate!`
# embeds shared/migrations into the binary.

# --- build ---------------------------------------------------------------------------------

# The toolchain the project is developed and tested with (`rustc --version`); the runtime
# below is the same Debian release, so the binaries' glibc matches.
FROM rust:1.95.0-slim-bookworm AS chef
RUN cargo install cargo-chef --version 0.1.78 --locked
WORKDIR /build

# A "recipe" of the workspace: manifests and lock file only, no source code.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /build/recipe.json recipe.json
# Every dependency, from the recipe alone: cached until Cargo.toml or Cargo.lock change.
RUN cargo chef cook --release --locked --recipe-path recipe.json
# Then the workspace itself.
COPY . .
RUN cargo build --release --locked -p writer -p reader

# A static busybox for the HEALTHCHECK (`busybox wget`), so the runtime stage needs no
# apt-get: no curl and none of its libraries in the image.
FROM busybox:1.37.0-musl AS busybox

# --- runtime (shared by both targets) ------------------------------------------------------

FROM debian:12.11-slim AS runtime
RUN groupadd --system --gid 10001 ledger \
 && useradd --system --uid 10001 --gid ledger --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin ledger
COPY --from=busybox /bin/busybox /usr/local/bin/busybox
ENV RUST_LOG=info \
    LOG_FORMAT=json
# Numeric, so orchestrators can verify "not root" without reading /etc/passwd.
USER 10001:10001
# VERSION is the workspace version in Cargo.toml (CI and docker-compose.yml pass it).
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.vendor="transaction-management-api" \
      org.opencontainers.image.base.name="docker.io/library/debian:12.11-slim"

# --- the two services ----------------------------------------------------------------------

FROM runtime AS writer
LABEL org.opencontainers.image.title="ledger-writer" \
      org.opencontainers.image.description="Transaction Management API: the write side (POST /transactions); runs the database migrations on start-up"
COPY --from=builder /build/target/release/writer /usr/local/bin/writer
# The API (behind nginx) and the private /metrics + /health listener.
ENV LISTEN_ADDR=0.0.0.0:8081 \
    METRICS_ADDR=0.0.0.0:9181
EXPOSE 8081 9181
# The probe follows METRICS_ADDR if it is overridden. The start period covers the migrations.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["/bin/sh", "-c", "busybox wget -q -O /dev/null \"http://127.0.0.1:${METRICS_ADDR##*:}/health\""]
ENTRYPOINT ["/usr/local/bin/writer"]

FROM runtime AS reader
LABEL org.opencontainers.image.title="ledger-reader" \
      org.opencontainers.image.description="Transaction Management API: the read side (GET /accounts, /transactions) from Redis views and PostgreSQL"
COPY --from=builder /build/target/release/reader /usr/local/bin/reader
ENV LISTEN_ADDR=0.0.0.0:8082 \
    METRICS_ADDR=0.0.0.0:9182
EXPOSE 8082 9182
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/bin/sh", "-c", "busybox wget -q -O /dev/null \"http://127.0.0.1:${METRICS_ADDR##*:}/health\""]
ENTRYPOINT ["/usr/local/bin/reader"]
