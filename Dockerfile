# One image for the API and the Dask scheduler/workers.
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
WORKDIR /app
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY pertstore pertstore
COPY store store
COPY catalog catalog
COPY producers producers
COPY consumers consumers
COPY api api
COPY recipes recipes
RUN pip install '.[s3]'
EXPOSE 8000 8786
CMD ["pertstore", "--help"]
