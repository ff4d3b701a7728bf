# The worker and dashboard image. One image serves both roles:
#   worker:    docker run IMAGE nsbi worker <job-uri> --attempt N
#   dashboard: docker run -p 8501:8501 IMAGE nsbi up --host 0.0.0.0   (a login is then required)
# Build with CUDA JAX for GPU workers:  docker build --build-arg EXTRAS=gpu -t nsbi-workbench-gpu .
#   (the `gpu` extra is jax[cuda12]: the CUDA 12 runtime, cuDNN and NCCL come as pip wheels, so the
#   slim base image is enough; the host needs only the NVIDIA driver >= 525 and the container
#   toolkit). Check that the image's JAX finds the GPU, and which one (nvidia-ml-py):
#     docker run --rm --gpus all nsbi-workbench-gpu worker --check-gpu    # exit 0 only on a GPU
#   Without a GPU (or without --gpus all) it says so in one line and exits 1 (docs/benchmarks.md).
FROM python:3.11-slim

ARG EXTRAS=""
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    NSBI_HOME=/var/lib/nsbi

WORKDIR /opt/nsbi
COPY pyproject.toml README.md constraints.txt ./
COPY sbi_engine ./sbi_engine
COPY backend ./backend
COPY dashboard ./dashboard
COPY app.py ./
# only the config: secrets.toml never enters the image (.dockerignore excludes it too)
COPY .streamlit/config.toml ./.streamlit/config.toml

# constraints.txt: the exact versions CI tested (`make constraints`), for a reproducible image
RUN if [ -n "$EXTRAS" ]; then pip install -c constraints.txt ".[${EXTRAS}]"; \
    else pip install -c constraints.txt .; fi \
    && useradd --create-home nsbi && mkdir -p "$NSBI_HOME" && chown nsbi "$NSBI_HOME"

USER nsbi
EXPOSE 8501
ENTRYPOINT ["nsbi"]
CMD ["--help"]
