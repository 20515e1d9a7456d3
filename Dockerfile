# syntax=docker/dockerfile:1
# The commerce image: `serve` by default; `migrate`, `stubs` and `token` are the other
# subcommands (the Helm chart runs each with `args`). Kubernetes probes check health over
# gRPC, so there is no HEALTHCHECK here.
#
#   docker build -t commerce:0.1.0 .                     # the tag the Helm chart and compose use
#   docker run --rm -p 8084:8084 commerce:0.1.0          # embedded demo (SQLite in /data)
#
# What the build needs, and nothing else (.dockerignore is an allowlist): build.rs compiles
# proto/ with protox (pure Rust: no protoc in any stage), sqlx embeds migrations/, the /docs
# page embeds assets/. scripts/check-deploy.sh checks that every file the crate embeds passes
# .dockerignore, that the binary is the crate's, and that the runtime user is not root.

# --- Build stages -------------------------------------------------------------------------
# cargo-chef caches the dependency build in its own layer: editing src/ rebuilds only our
# crate, not the ~400 dependencies.
FROM rust:1-bookworm AS chef
RUN cargo install cargo-chef --locked --version ^0.1
WORKDIR /build

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
# There is no database at build time: the crate uses no checked `query!` macros, and this keeps
# any that appear from trying to reach one (they would need a committed .sqlx/).
ENV SQLX_OFFLINE=true
COPY --from=planner /build/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin commerce
COPY . .
RUN cargo build --release --locked --bin commerce \
    && install -D -m 0755 target/release/commerce /out/commerce \
    && mkdir -p /out/data

# --- Runtime --------------------------------------------------------------------------------
# distroless/cc: glibc, libgcc, CA certificates and tzdata; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12 AS runtime
LABEL org.opencontainers.image.title="commerce" \
      org.opencontainers.image.description="gRPC-first commerce service: carts, event-sourced orders, fulfillment saga" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/commerce /usr/local/bin/commerce
# The working directory holds the embedded demo's SQLite file (SQLITE_PATH defaults to
# commerce.db); Kubernetes mounts an emptyDir here, the root filesystem stays read-only.
COPY --from=builder --chown=10001:10001 /out/data /data
WORKDIR /data
USER 10001:10001
# 8084: gRPC, REST, /health, /metrics (serve); 8085: the stubs (`commerce stubs`).
EXPOSE 8084 8085
ENTRYPOINT ["commerce"]
CMD ["serve"]
