# rbee/hive: the hive agent and the CPU-only reference worker on an empty
# base. See queen.Dockerfile for how the context is staged.
#
# The image has no shell and no other programs, so a hive started with
# --allow-run can run only what is mounted into it. For GPUs, nvidia-smi and
# real inference servers need a C library: build hive-cuda.Dockerfile.
FROM scratch
COPY rootfs/ /
COPY --chown=10001:10001 data/ /
COPY bin/hive bin/rbee-worker bin/rbee-healthcheck /usr/local/bin/
ENV PATH=/usr/local/bin \
    HOME=/data
USER 10001:10001
WORKDIR /data
EXPOSE 9100
# A hive serves /healthz only with --metrics-addr; the default command below
# sets it, and a compose file that changes it should change this too.
HEALTHCHECK --interval=10s --timeout=4s --start-period=5s --retries=3 \
    CMD ["rbee-healthcheck", "http://127.0.0.1:9100/healthz"]
ENTRYPOINT ["hive"]
CMD ["--data-dir", "/data/hive", "--metrics-addr", "0.0.0.0:9100"]
