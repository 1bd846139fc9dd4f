"""Built-in language-model providers."""
