"""The long-running service: scheduler, signals, systemd and metrics."""
