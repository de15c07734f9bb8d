"""Command line: `python -m ttsvar_core {generate,make-tiny,convert-t5,demo,evaluate,compare}`.

A user's mistake (a wrong value, a missing or unreadable file, too little memory) ends with one line saying
what is wrong and how to fix it, and exit status 1; a traceback means a bug, or was asked for with --debug.
"""
from __future__ import annotations

import argparse
import sys

USER_ERRORS = (ValueError, OSError)  # every message the engine, loaders and scorers raise for a user's input


def one_line(error: BaseException) -> str:
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ttsvar_core")
    sub = ap.add_subparsers(dest="command", required=True)
    tiny = sub.add_parser("make-tiny", help="write tiny random models in every real on-disk format")
    tiny.add_argument("out", help="output folder (gets infinity/, infinity_vae/, text_encoders/)")
    tiny.add_argument("--seed", type=int, default=0)
    from .cli import add_convert_t5_parser, add_generate_parser
    from .shapesworld.demo import add_demo_parser
    from .shapesworld.experiments import add_compare_parser, add_evaluate_parser
    add_generate_parser(sub)
    add_convert_t5_parser(sub)
    add_demo_parser(sub)
    add_evaluate_parser(sub)
    add_compare_parser(sub)
    for command in sub.choices.values():
        command.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    args = ap.parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        import torch
        if args.debug or not isinstance(e, USER_ERRORS + (torch.OutOfMemoryError,)):
            raise
        message = one_line(e)
        if isinstance(e, torch.OutOfMemoryError):
            message = ("the device ran out of memory: use fewer candidates (a smaller --n), a smaller "
                       f"--pixel-budget or fewer prompts ({message})")
        print(f"error: {message}", file=sys.stderr)
        return 1


def run(args) -> int:
    if args.command == "make-tiny":
        from .testing.tiny_models import write_tiny_models
        for name, path in write_tiny_models(args.out, args.seed).items():
            print(f"{name:32s} {path}")
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
