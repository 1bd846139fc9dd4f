"""The reply: the prompt, the LLM stream, sentences, the spoken form of the text, and TTS to audio frames."""
