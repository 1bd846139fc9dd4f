"""The application layer: builds providers, memory and sessions from settings (what cli/ and bench/ both use)."""
