"""servicestage-job-poller: watch ServiceStage jobs, publish every state change to Redis streams."""

from importlib.metadata import PackageNotFoundError, version

try:
    # pyproject.toml is the one place the version is written; installed metadata carries it.
    __version__ = version("servicestage-job-poller")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
