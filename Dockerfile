# servicestage-job-poller container image.
#
#   docker build -t servicestage-job-poller:0.1.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#
# Two stages: the builder installs the package and its pinned dependencies
# (deploy/constraints.txt, the versions the test suite ran against) into a virtualenv at
# /opt/venv, then removes pip and setuptools from it (installers the daemon never runs: about
# half the virtualenv); the runtime stage is a clean python:3.11-slim with only that virtualenv
# copied in, running as an unprivileged fixed UID (10001) that Kubernetes' runAsNonRoot can
# verify.  The package's wheel holds the daemon and its CLI only: the emulator (poller/sim/),
# the demo and poller.localredis are servicestage-job-poller-devkit's (devkit/), which only the
# `emulator` target (`--target emulator`, for deploy/compose.yaml) adds.
#
# Without PyPI (an internal mirror, an offline CI), point the builder's pip elsewhere:
#   --build-arg PIP_INDEX_URL=https://mirror.example/simple
# tests/container builds this image in the test suite that way, from a wheelhouse it serves on
# the build host's loopback.
#
# For fully reproducible builds pin the base image by digest as well, e.g.
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>
# Both stages must use the same image: the virtualenv refers to /usr/local/bin/python3.11.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder -------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

# Where pip looks for packages (builder stage only: it never reaches the runtime image).
ARG PIP_INDEX_URL=https://pypi.org/simple

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src

# Dependencies first, from the pinned constraints only: this layer is rebuilt when the pins
# change, not on every code change.  Every dependency ships manylinux wheels for CPython 3.11
# (amd64 and arm64), so no compiler is needed.
COPY deploy/constraints.txt deploy/constraints.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --requirement deploy/constraints.txt

# Then the package itself (README.md is the package's long description, so the build needs it;
# setup.py leaves the devkit's modules out of the wheel).  pip check fails the build if the
# constraints no longer satisfy pyproject.toml, and so does any devkit module that got in (-I:
# not the sources in the working directory).  Then pip and setuptools leave the virtualenv
# (nothing imports them at run time; the daemon installs nothing) and the daemon must still
# start without them.
COPY pyproject.toml setup.py README.md LICENSE ./
COPY poller/ poller/
RUN /opt/venv/bin/pip install --no-cache-dir --constraint deploy/constraints.txt . \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/python -I -c "import importlib.util as u, sys; found = [m for m in ('poller.sim', 'poller.demo', 'poller.localredis') if u.find_spec(m)]; sys.exit(f'devkit modules in the image: {found}' if found else 0)" \
    && /opt/venv/bin/python -m pip uninstall --yes --quiet setuptools pip \
    && /opt/venv/bin/poller --version

# --- emulator (not the default target) ------------------------------------------------------
# `--target emulator`: the runtime virtualenv plus servicestage-job-poller-devkit, for the
# ServiceStage emulator (`poller sim`) that deploy/compose.yaml runs in place of the real API.
# For local runs only, never published, so without OCI labels (they would repeat the version).
# BuildKit and buildah skip this stage when they build the default target below.
# hadolint ignore=DL3049
FROM ${PYTHON_IMAGE} AS emulator

ARG PIP_INDEX_URL=https://pypi.org/simple

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY --from=builder /opt/venv /opt/venv
# devkit/ links to these (../pyproject.toml for its version, ../poller/... for its modules).
COPY pyproject.toml LICENSE ./
COPY poller/sim/ poller/sim/
COPY poller/demo.py poller/localredis.py poller/
COPY devkit/ devkit/
RUN python -m ensurepip \
    && python -m pip install --no-cache-dir --no-deps ./devkit \
    && python -m pip check \
    && poller sim --help >/dev/null \
    && rm -rf /src

WORKDIR /
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["poller"]
CMD ["sim", "--host", "0.0.0.0", "--port", "8000"]

# --- runtime -------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="servicestage-job-poller" \
      org.opencontainers.image.description="Watches Huawei Cloud ServiceStage jobs and publishes every task and job state change to Redis streams, exactly once." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only in Kubernetes (pip already compiled
# the bytecode in the builder).  PYTHONFAULTHANDLER: tracebacks of all threads on a fatal signal.
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1

RUN groupadd --system --gid 10001 poller \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin poller

# Owned by root and not writable by the runtime user.
COPY --from=builder /opt/venv /opt/venv

USER 10001:10001

# /healthz, /readyz and /metrics (POLLER_HTTP_PORT).
EXPOSE 9464

# Exec-form ENTRYPOINT: the daemon is PID 1 and receives SIGTERM itself; it drains in-flight
# polls within POLLER_SHUTDOWN_GRACE (default 10 s) and exits 0.  Give it longer than that
# (docker stop --time / Kubernetes terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM

# No curl in slim images: Python's urllib.  urlopen raises (exit 1) on refusal, timeout or any
# non-2xx answer.  Follows POLLER_HTTP_PORT when it is changed; fails when it is 0 (disabled).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('POLLER_HTTP_PORT', '9464'), timeout=4)"]

ENTRYPOINT ["poller"]
CMD ["run"]
