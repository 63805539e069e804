# The psvae-opt image of the worker, init and dashboard services (docker-compose.yml).
# pip's default torch wheel for Linux carries CUDA, so the same image trains on a GPU.
FROM python:3.11-slim

ENV TZ=UTC PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /work

COPY pyproject.toml constraints.txt README.md ./
COPY psvae_opt ./psvae_opt
RUN pip install -c constraints.txt torch && pip install -c constraints.txt .

COPY studies ./studies
# run folders, artifacts and data are volumes (see docker-compose.yml)
ENTRYPOINT ["psvae-opt"]
CMD ["--help"]
