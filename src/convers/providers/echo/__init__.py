"""Echo cancellers (contracts/echo.py)."""
