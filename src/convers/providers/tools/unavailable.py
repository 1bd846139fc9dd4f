"""The error a tool raises when settings or the session leave it nothing to work with."""


class ToolUnavailable(RuntimeError):
    """The tool cannot run in this session (no memory, no SearXNG URL); the message says what to set."""
