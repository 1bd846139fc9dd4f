"""Transports: how audio and events reach a client (browser, sound card, terminal, tests)."""
