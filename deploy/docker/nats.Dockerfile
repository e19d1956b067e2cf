# rbee/nats: nats-server, built from its official module at the version
# queen/go.mod pins, on an empty base. See queen.Dockerfile for the context.
FROM scratch
COPY rootfs/ /
COPY --chown=10001:10001 data/ /
COPY bin/nats-server bin/rbee-healthcheck /usr/local/bin/
ENV PATH=/usr/local/bin \
    HOME=/data
USER 10001:10001
WORKDIR /data
# Clients, cluster routes, monitoring.
EXPOSE 4222 6222 8222
# /healthz answers 200 once the server and, clustered, JetStream are current.
HEALTHCHECK --interval=10s --timeout=4s --start-period=10s --retries=3 \
    CMD ["rbee-healthcheck", "http://127.0.0.1:8222/healthz"]
ENTRYPOINT ["nats-server"]
# A single JetStream server; deploy/nats/nats.conf makes it one of three.
CMD ["--jetstream", "--store_dir", "/data/jetstream", "--http_port", "8222"]
