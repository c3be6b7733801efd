# The signaling server image: a build stage with the Rust toolchain, and a
# small runtime stage with the binary and the browser client.
#   docker build -t signaling .
#   docker run --rm -p 8080:8080 signaling          # then open http://localhost:8080/
# Every flag is also a SIGNALING_* environment variable (`signaling --help`):
#   docker run --rm -p 8080:8080 -e SIGNALING_REDIS_URL=redis://redis:6379 signaling

FROM rust:1-bookworm AS build
WORKDIR /src
# The whole workspace: cargo needs every member's manifest and sources to load
# the workspace, even though only the server is built.
COPY Cargo.toml Cargo.lock ./
COPY signaling ./signaling
COPY client ./client
COPY peer ./peer
COPY tests ./tests
COPY bench ./bench
RUN cargo build --release --locked -p signaling

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin signaling
COPY --from=build /src/target/release/signaling /usr/local/bin/signaling
# The browser client, served at `/`. The server's built-in default points into
# the source tree, which is not in this image.
COPY client/web /srv/web
ENV SIGNALING_LISTEN=0.0.0.0:8080 \
    SIGNALING_WEB_ROOT=/srv/web \
    SIGNALING_LOG_FORMAT=json
USER signaling
EXPOSE 8080
# Liveness only, without curl: bash's /dev/tcp sends a plain HTTP/1.0 GET to
# the port of SIGNALING_LISTEN and wants a 200. Not /readyz: that turns 503
# while draining or while Redis is away, and neither should get the container
# restarted (load balancers use /readyz).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${SIGNALING_LISTEN##*:} && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
# SIGTERM starts the drain: goaway to every client, exit 0 within
# SIGNALING_DRAIN_TIMEOUT (give `docker stop -t` more than that).
STOPSIGNAL SIGTERM
ENTRYPOINT ["signaling"]
