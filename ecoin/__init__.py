"""ecoin: secure pay-per-analysis for IoT devices."""

__version__ = "0.1.0"
