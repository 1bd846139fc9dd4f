"""providers/tts"""
