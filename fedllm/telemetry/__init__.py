"""Prometheus telemetry: what the apps record, host memory figures, one exporter per role."""
