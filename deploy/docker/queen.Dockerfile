# rbee/queen: the queen and the rbee CLI on an empty base.
#
# Built by `make images` from the context it stages in build/docker/: static
# binaries under bin/, /etc (passwd, group, CA certificates) and /tmp under
# rootfs/, and the data directories, owned by the rbee user, under data/.
# scratch has no shell, mkdir or chown, so everything arrives by COPY.
FROM scratch
COPY rootfs/ /
COPY --chown=10001:10001 data/ /
COPY bin/queen bin/rbee bin/rbee-healthcheck /usr/local/bin/
ENV PATH=/usr/local/bin \
    HOME=/data \
    RBEE_QUEEN=http://127.0.0.1:7833
USER 10001:10001
WORKDIR /data
EXPOSE 7833
# /readyz: NATS connected, streams answering, relay and cluster view ready.
HEALTHCHECK --interval=10s --timeout=4s --start-period=10s --retries=3 \
    CMD ["rbee-healthcheck", "http://127.0.0.1:7833/readyz"]
ENTRYPOINT ["queen"]
# Listening beyond loopback needs --admin-key (QUEEN_ADMIN_KEY) or --insecure;
# without either the queen refuses to start, which is the point.
CMD ["--http-addr", "0.0.0.0:7833", "--data-dir", "/data/queen"]
