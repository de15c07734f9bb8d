"""ComfyUI node classes of comfyui-ttsvar, collected into ComfyUI's two mappings.

The pack's root __init__.py re-exports these mappings to ComfyUI.
"""


class TTSVARPing:
    """Placeholder node: echoes its text. Proves the pack loads and runs in ComfyUI."""

    CATEGORY = "TTS-VAR"
    DESCRIPTION = "Returns the given text unchanged (installation check)."
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("text",)
    FUNCTION = "ping"
    # An output node, so a graph made of this node alone is a valid prompt.
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "ping", "multiline": False})}}

    def ping(self, text):
        return {"ui": {"text": [text]}, "result": (text,)}


NODE_CLASS_MAPPINGS = {
    "TTSVAR_Ping": TTSVARPing,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "TTSVAR_Ping": "TTS-VAR Ping",
}
