"""Host-side pieces every service shares: TLS, configuration, logs, health, topics, the bank client."""

__version__ = "0.1.0"
