"""The browser front-end: an HTTPS + WebSocket server, its access token, and the page it serves."""
