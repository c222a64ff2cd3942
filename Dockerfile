# syntax=docker/dockerfile:1
# FaceKey images. Targets:
#   docker build --target runtime  -t facekey-runtime .
#   docker build --target operator -t facekey-operator .
# Stages: the UI bundle (Node), the ONNX Runtime library (from the pinned PyPI wheel), the Rust
# build, then minimal distroless images running as a non-root user.

FROM node:20.19-bookworm-slim AS ui
WORKDIR /src/ui
COPY ui/package.json ui/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY ui/ ./
RUN npm run build

FROM python:3.11.13-slim-bookworm AS onnxruntime
WORKDIR /src
COPY scripts/setup-onnxruntime.sh scripts/
RUN FACEKEY_ORT_DIR=/opt/onnxruntime scripts/setup-onnxruntime.sh \
    && rm -rf /opt/onnxruntime/wheel-cache

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY crds crds
COPY operator operator
COPY runtime runtime
COPY --from=ui /src/ui/dist ui/dist
RUN cargo build --release --locked -p facekey-runtime -p facekey-operator \
    && install -D target/release/facekey-runtime /out/facekey-runtime \
    && install -D target/release/facekey-operator /out/facekey-operator \
    && install -d -o 65532 -g 65532 /out/data

# glibc and libstdc++ (ONNX Runtime needs them), no shell, user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
# The code is MIT; the bundled models and ONNX Runtime carry their own terms
# (/usr/share/facekey/models/MODELS.md, /usr/share/doc/facekey/onnxruntime/).
LABEL org.opencontainers.image.title="facekey-runtime" \
      org.opencontainers.image.description="FaceKey face verification server" \
      org.opencontainers.image.licenses="MIT AND LicenseRef-bundled-models"
COPY --from=onnxruntime /opt/onnxruntime/libonnxruntime.so.1.32.0 /usr/lib/facekey/libonnxruntime.so.1.32.0
COPY --from=onnxruntime /opt/onnxruntime/onnxruntime-LICENSE /opt/onnxruntime/onnxruntime-ThirdPartyNotices.txt /usr/share/doc/facekey/onnxruntime/
COPY LICENSE /usr/share/doc/facekey/LICENSE
COPY runtime/models /usr/share/facekey/models
COPY --from=build /out/facekey-runtime /usr/bin/facekey-runtime
COPY --from=build --chown=65532:65532 /out/data /var/lib/facekey
ENV FACEKEY_ORT_LIBRARY=/usr/lib/facekey/libonnxruntime.so.1.32.0 \
    FACEKEY_MODELS_DIR=/usr/share/facekey/models \
    FACEKEY_DATA_DIR=/var/lib/facekey \
    FACEKEY_LOG_FORMAT=json
USER 65532:65532
# API keys file and templates: keep them on a volume (README, "Container images").
VOLUME ["/var/lib/facekey"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=6s --start-period=60s \
    CMD ["/usr/bin/facekey-runtime", "--check-health"]
ENTRYPOINT ["/usr/bin/facekey-runtime"]

FROM gcr.io/distroless/cc-debian12:nonroot AS operator
LABEL org.opencontainers.image.title="facekey-operator" \
      org.opencontainers.image.description="FaceKey Kubernetes operator" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /out/facekey-operator /usr/bin/facekey-operator
USER 65532:65532
ENTRYPOINT ["/usr/bin/facekey-operator"]
