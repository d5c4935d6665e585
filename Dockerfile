# syntax=docker/dockerfile:1
#
# cutover in a container: built on the official Rust image, run on
# distroless/cc (glibc and libgcc, which is all the binary links; no shell,
# no curl) as a non-root user.
#
#   docker build -t cutover .
#   docker run -d --name cutover -p 8080:8080 -p 8081:8081 \
#     -v $PWD/cutover.toml:/etc/cutover/cutover.toml:ro \
#     -v cutover-state:/var/lib/cutover cutover
#   docker exec cutover cutover ctl status
#
# Without the AWS SDK (no `cutover edge`, no edge sync; builds in about a
# quarter of the time): docker build --build-arg CARGO_FLAGS=--no-default-features .

ARG RUST_VERSION=1.95

# ---------------------------------------------------------------- build
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
ARG CARGO_FLAGS=""
# The registry and target/ are cache mounts (kept between builds), so the
# binary is copied out of target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin cutover ${CARGO_FLAGS} \
 && install -D -m 0755 target/release/cutover /out/cutover
# The state directory, owned by the run image's non-root user (65532,
# `nonroot` in distroless); COPY --chown below keeps it so.
RUN install -d -m 0750 /out/var/lib/cutover

# ------------------------------------------------------------------ run
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/cutover /usr/local/bin/cutover
COPY --from=build /src/deploy/docker/cutover.toml /etc/cutover/cutover.toml
COPY --from=build --chown=65532:65532 /out/var/lib/ /var/lib/
COPY --from=build /src/LICENSE /usr/share/doc/cutover/LICENSE
USER 65532:65532
WORKDIR /var/lib/cutover
VOLUME ["/var/lib/cutover"]
# Logs go to stderr (`docker logs`), without colour codes.
ENV NO_COLOR=1
# 8080: the proxy listener, 8081: the preview listener (always green),
# 9901: the admin API. The default config keeps the admin API on loopback
# (for `docker exec` and the health check); publishing 9901 needs a config
# with admin.listen = "0.0.0.0:9901" and admin.token.
EXPOSE 8080 8081 9901
# SIGTERM drains: listeners stop accepting, in-flight work gets until
# shutdown_timeout, then the rest is cut. `docker stop` sends SIGKILL after
# 10 s unless told otherwise (--time, Compose's stop_grace_period).
STOPSIGNAL SIGTERM
# GET /readyz on the admin API (CUTOVER_ADMIN, default
# http://127.0.0.1:9901; no token needed): exit 0 when ready, 1 with the
# reason otherwise. The run image has no curl; the binary is the client.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/cutover", "ctl", "health", "--timeout", "3s"]
ENTRYPOINT ["/usr/local/bin/cutover"]
CMD ["run", "--config", "/etc/cutover/cutover.toml"]
