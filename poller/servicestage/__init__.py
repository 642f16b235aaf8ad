"""ServiceStage API access: HTTP client, authentication and response models."""
