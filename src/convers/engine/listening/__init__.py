"""Listening: voice activity to user turns, the end-of-turn judge, live and speculative transcription."""
