"""Barge-in: what user speech over the agent does to the agent's turn (a pure arbiter)."""
