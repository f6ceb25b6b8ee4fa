"""Roll the `champion` alias back to a named version of the registered model.

    python -m stages.rollback 3 --reason "v4 misreads smoking as eating"
    python -m stages.rollback 3 --model har-wisdm_all

Not a DVC stage: it changes the registry only. The version keeps a tag saying which version it
replaced and why; the service picks it up on its next load of models:/<name>@champion.
"""
from __future__ import annotations

import argparse

from har.config import load_params
from har.logs import add_log_arguments, setup_logging
from har.registry import RegistryUnreachable, rollback, tracking_uri


def main(argv=None) -> None:
    registry = load_params()["registry"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", type=int, help="the registered version to make champion")
    parser.add_argument("--model", default=registry["model_name"], help="registered model name (default from params.yaml)")
    parser.add_argument("--reason", default="", help="why, kept as a tag on the version")
    add_log_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_format, args.log_level)  # the registry.rollback audit event goes to stderr
    try:
        result = rollback(args.model, args.version, reason=args.reason, uri=tracking_uri(registry["tracking_uri"]))
    except (ValueError, RegistryUnreachable) as error:
        raise SystemExit(f"rollback: {error}") from None
    print(f"{result['model_name']}: champion v{result['champion_before']} -> v{result['champion_version']}"
          + (" (note: this version failed the promotion gate when it was registered)" if result["gate"] == "failed" else ""))


if __name__ == "__main__":
    main()
