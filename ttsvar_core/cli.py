"""`python -m ttsvar_core generate`: run a strategy on real or tiny model files."""
from __future__ import annotations


def add_generate_parser(sub):
    p = sub.add_parser("generate", help="generate images with plain sampling, Best-of-N, IS or TTS-VAR")
    p.set_defaults(func=lambda args: (print("generate: not available yet"), 2)[1])
    return p
