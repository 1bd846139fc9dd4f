"""providers/stt"""
