"""The conversation engine: sessions, turn-taking, replies. Knows contracts, never concrete providers."""
