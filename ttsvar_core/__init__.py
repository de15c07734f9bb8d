"""Framework-independent core of comfyui-ttsvar: Infinity, the TTS-VAR search engine, scorers."""
