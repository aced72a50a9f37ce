"""The gateway's settings."""
