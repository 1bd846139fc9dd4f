"""providers/embedder"""
