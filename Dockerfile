# The signaling server: a build stage with the Rust toolchain, and a small
# runtime stage with the binary and the browser client.
#   docker build -t signaling .
#   docker run -p 8080:8080 signaling

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY signaling ./signaling
COPY client ./client
COPY peer ./peer
COPY tests ./tests
COPY bench ./bench
RUN cargo build --release --locked -p signaling

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home signaling
COPY --from=build /src/target/release/signaling /usr/local/bin/signaling
COPY client/web /srv/web
ENV SIGNALING_LISTEN=0.0.0.0:8080 \
    SIGNALING_WEB_ROOT=/srv/web \
    SIGNALING_LOG_FORMAT=json
USER signaling
EXPOSE 8080
# Liveness only: readiness (/readyz) is for load balancers, and must not
# restart a node whose Redis is away.
HEALTHCHECK --interval=10s --timeout=2s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["signaling"]
