"""ComfyUI node classes of comfyui-ttsvar, collected into ComfyUI's two mappings.

The pack's root __init__.py re-exports these mappings to ComfyUI. Node ids carry the TTSVAR_ prefix so they
never collide with other packs.
"""

from .loaders import TTSVARFeatureLoader, TTSVARModelLoader, TTSVARRewardLoader
from .search import (TTSVARBatchSchedule, TTSVARCluster, TTSVARDecode, TTSVARPickBest, TTSVARResample,
                     TTSVARSampler, TTSVARStart, TTSVARStep, TTSVARTextEncode)

_NODES = (
    ("TTSVAR_ModelLoader", TTSVARModelLoader, "TTS-VAR Load Infinity Model"),
    ("TTSVAR_RewardLoader", TTSVARRewardLoader, "TTS-VAR Load Reward Model"),
    ("TTSVAR_FeatureLoader", TTSVARFeatureLoader, "TTS-VAR Load Feature Extractor"),
    ("TTSVAR_TextEncode", TTSVARTextEncode, "TTS-VAR Text Encode"),
    ("TTSVAR_Start", TTSVARStart, "TTS-VAR Start Candidates"),
    ("TTSVAR_BatchSchedule", TTSVARBatchSchedule, "TTS-VAR Batch Schedule"),
    ("TTSVAR_Step", TTSVARStep, "TTS-VAR Step Scales"),
    ("TTSVAR_Cluster", TTSVARCluster, "TTS-VAR Clustering Selection"),
    ("TTSVAR_Resample", TTSVARResample, "TTS-VAR Reward Resampling"),
    ("TTSVAR_Decode", TTSVARDecode, "TTS-VAR Decode Candidates"),
    ("TTSVAR_PickBest", TTSVARPickBest, "TTS-VAR Pick Best"),
    ("TTSVAR_Sampler", TTSVARSampler, "TTS-VAR Sampler (all-in-one)"),
)

NODE_CLASS_MAPPINGS = {node_id: cls for node_id, cls, _ in _NODES}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: name for node_id, _, name in _NODES}
