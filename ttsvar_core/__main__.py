"""Command line: `python -m ttsvar_core {generate,make-tiny,convert-t5,demo,evaluate}`."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ttsvar_core")
    sub = ap.add_subparsers(dest="command", required=True)
    tiny = sub.add_parser("make-tiny", help="write tiny random models in every real on-disk format")
    tiny.add_argument("out", help="output folder (gets infinity/, infinity_vae/, text_encoders/)")
    tiny.add_argument("--seed", type=int, default=0)
    from .cli import add_convert_t5_parser, add_generate_parser
    from .shapesworld.demo import add_demo_parser
    from .shapesworld.experiments import add_evaluate_parser
    add_generate_parser(sub)
    add_convert_t5_parser(sub)
    add_demo_parser(sub)
    add_evaluate_parser(sub)
    args = ap.parse_args(argv)
    if args.command == "make-tiny":
        from .testing.tiny_models import write_tiny_models
        for name, path in write_tiny_models(args.out, args.seed).items():
            print(f"{name:32s} {path}")
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
