# wxkf-manager: multi-stage build. (Written for a standard Docker engine; no
# engine runs on the machines this was developed on, so it is not built in CI.)

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild the world.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/protocol.rs \
    && cargo build --release --locked --bin wxkf-manager 2>/dev/null || true
COPY build.rs ./
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
# The commit `--version` prints (the build context has no .git):
# docker build --build-arg WXKF_COMMIT=$(git describe --always --dirty) .
ARG WXKF_COMMIT=unknown
RUN touch src/main.rs src/lib.rs && WXKF_COMMIT="$WXKF_COMMIT" cargo build --release --locked --bin wxkf-manager

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin wxkf \
    && mkdir -p /data && chown wxkf /data
COPY --from=build /src/target/release/wxkf-manager /usr/local/bin/wxkf-manager
USER wxkf
WORKDIR /data
ENV PORT=7777 HOST=0.0.0.0 DATA_DIR=/data RUST_LOG=info
EXPOSE 7777
VOLUME /data
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${PORT}/healthz" || exit 1
ENTRYPOINT ["/usr/local/bin/wxkf-manager"]
CMD ["serve"]
