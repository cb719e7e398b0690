# One small image holding `cairn` (the CLI, `cairn agent`, `cairn restore-init` and `cairn server`).
#
#   docker build -t ghcr.io/cairn-backup/cairn:0.1.0 .
#   docker build --target postgres -t ghcr.io/cairn-backup/cairn-postgres:0.1.0 .   # for the pg_dump CronJob
#
# The runtime image is distroless (glibc, no shell) and runs as a non-root user by default;
# the DaemonSet and the init container set the user they need (uid 0 with only the
# capabilities they use).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p cairn-agent \
    && install -m 0755 target/release/cairn /cairn

# postgres:16 with cairn, for `cairn backup --stdin-from-command -- pg_dump ...`.
FROM postgres:16 AS postgres
COPY --from=build /cairn /usr/local/bin/cairn
USER postgres
ENTRYPOINT ["/usr/local/bin/cairn"]

FROM gcr.io/distroless/cc-debian12:nonroot AS cairn
COPY --from=build /cairn /usr/local/bin/cairn
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/cairn"]
