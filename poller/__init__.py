"""servicestage-job-poller: watch ServiceStage jobs, publish every state change to Redis streams."""

__version__ = "0.1.0"
