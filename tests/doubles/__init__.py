"""Loopback doubles of outside services' real APIs (tests talk to them with the real clients)."""
