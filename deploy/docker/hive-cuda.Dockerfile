# rbee/hive-cuda: the hive on llama.cpp's official CUDA server image, for a
# GPU machine. The NVIDIA container runtime mounts the driver and
# nvidia-smi into the container; llama-server comes with the base image.
#
# Unlike the other images this one pulls a base image, so it is built on
# the GPU machine (or any machine with registry access), not by make images:
#
#   make build
#   deploy/docker/stage.sh build/docker bin    # after make images, or:
#   docker build -f deploy/docker/hive-cuda.Dockerfile -t rbee/hive-cuda:dev build/docker
#
# LLAMA_IMAGE picks another llama.cpp build (a pinned tag, say).
ARG LLAMA_IMAGE=ghcr.io/ggml-org/llama.cpp:server-cuda
FROM ${LLAMA_IMAGE}
COPY bin/hive bin/rbee-worker bin/rbee-healthcheck /usr/local/bin/
RUN useradd --system --uid 10001 --home-dir /data --create-home rbee \
 && mkdir -p /data/hive && chown -R 10001:10001 /data
# The base image keeps llama-server in /app.
ENV PATH=/usr/local/bin:/app:/usr/bin:/bin \
    HOME=/data \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
WORKDIR /data
EXPOSE 9100
HEALTHCHECK --interval=10s --timeout=4s --start-period=5s --retries=3 \
    CMD ["rbee-healthcheck", "http://127.0.0.1:9100/healthz"]
ENTRYPOINT ["hive"]
CMD ["--data-dir", "/data/hive", "--metrics-addr", "0.0.0.0:9100"]
