# cohort-sync as a small container image: a release build in the Rust image, then only the
# stripped binary (and CA certificates for HTTPS to Amplitude and S3) in a slim runtime
# image, run as a non-root user. Build: `docker build -t cohort-sync .` (see deploy/README.md).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY examples ./examples
COPY benches ./benches
# `--version` names the commit: `docker build --build-arg COHORT_SYNC_COMMIT=$(git rev-parse
# --short=12 HEAD) .` (the build context has no .git).
ARG COHORT_SYNC_COMMIT=unknown
ENV COHORT_SYNC_COMMIT=$COHORT_SYNC_COMMIT
RUN cargo build --release --locked --bin cohort-sync \
 && strip target/release/cohort-sync

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /work --create-home cohort-sync
COPY --from=build /src/target/release/cohort-sync /usr/local/bin/cohort-sync
USER 10001
WORKDIR /work
# Pipelines are mounted (e.g. at /pipelines) and named: `run /pipelines/export.toml`. Keep
# state and output on s3:// — a container's disk does not outlive it.
ENTRYPOINT ["cohort-sync"]
CMD ["--help"]
