"""Built-in speech-to-text providers."""
