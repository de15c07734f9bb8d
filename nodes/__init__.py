"""ComfyUI nodes of comfyui-ttsvar, in the schema API (comfy_api.latest), handed to ComfyUI by one extension.

The pack's root __init__.py exposes `comfy_entrypoint`. Node ids carry the TTSVAR_ prefix so they never
collide with other packs; they are what saved workflows refer to, so they never change.
"""
from comfy_api.latest import ComfyExtension

from .candidates import TTSVARDecode, TTSVARStart, TTSVARStep
from .images import TTSVARScoreImages, TTSVARStartFromImage
from .loaders import TTSVARFeatureLoader, TTSVARModelLoader, TTSVARRewardLoader
from .prompts import TTSVARTextEncode
from .sampler import TTSVARSampler
from .schedule import TTSVARBatchSchedule
from .selection import TTSVARCluster, TTSVARPickBest, TTSVARResample
from .steering import TTSVARKeep, TTSVARVary

NODES = [TTSVARModelLoader, TTSVARRewardLoader, TTSVARFeatureLoader, TTSVARTextEncode, TTSVARStart,
         TTSVARBatchSchedule, TTSVARStep, TTSVARCluster, TTSVARResample, TTSVARDecode, TTSVARPickBest, TTSVARSampler,
         TTSVARKeep, TTSVARVary, TTSVARStartFromImage, TTSVARScoreImages]


class TTSVARExtension(ComfyExtension):
    async def get_node_list(self):
        return list(NODES)


async def comfy_entrypoint() -> ComfyExtension:
    return TTSVARExtension()
