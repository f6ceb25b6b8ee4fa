"""`python -m store`: the study store's commands (the store's URL from --store, else params.yaml's store.url).

    python -m store upgrade [--store URL]                       # create or upgrade the schema in place (Alembic)
    python -m store rescore --model models/model.onnx [--subject ID] [--store URL]
    python -m store erase ID [--store URL]                      # every row, blob and personal model of ID
    python -m store gc [--store URL]                            # blobs no recording refers to (older than 1 h)
"""
from __future__ import annotations

import argparse
import json
import sys

from har.config import load_params
from har.logs import add_log_arguments, setup_logging


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m store", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--store", help="database URL (default: store.url in params.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("upgrade", help="create or upgrade the schema (alembic upgrade head)")
    rescore = commands.add_parser("rescore", help="score the stored recordings with another model; old scorings stay")
    rescore.add_argument("--model", required=True, help="ONNX model file, or models:/<name>@<alias>")
    rescore.add_argument("--subject", help="only this subject's recordings")
    erase = commands.add_parser("erase", help="remove every trace of a subject (an audit row keeps the counts)")
    erase.add_argument("subject")
    commands.add_parser("gc", help="remove fused blobs no recording refers to")
    add_log_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_format, args.log_level)  # erase and rescore write audit events to stderr
    from store import NotFound, Store

    params = load_params(args.params)
    subject = getattr(args, "subject", None)
    if subject is not None:
        from har.subject import SubjectIdError, check_subject

        try:
            check_subject(subject)
        except SubjectIdError as error:
            print(f"store: {error}", file=sys.stderr)
            return 2
    store = Store.from_params(params, url=args.store)
    try:
        if args.command == "upgrade":
            result = {"upgraded": str(store.engine.url.render_as_string(hide_password=True))}
        elif args.command == "erase":
            result = store.erase(args.subject)
        elif args.command == "gc":
            result = store.collect_garbage()
        else:
            from har.runtime import ModelRuntime, model_file
            from har.wear import WearRule

            runtime = ModelRuntime(model_file(args.model, params.get("registry", {}).get("tracking_uri")))
            from store.rescore import rescore

            result = rescore(store, runtime, WearRule.from_params(params.get("wear")), subject=args.subject)
    except NotFound as error:
        print(f"store: {error}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
