"""Built-in tools the agent may call."""
