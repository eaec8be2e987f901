"""The ``mtl`` command line: ``mtl train`` and ``mtl eda``.

Bad input ends with one line ``error: <what and where>`` on stderr and exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from mtl.errors import MtlError

EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtl", description="Multi-task learning on Keras 3: config in, model out.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a config in a run directory")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="YAML config file")
    source.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last epoch")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set training.epochs=5 (repeatable)")
    train.add_argument("--run-dir", help="where the run is written (default: output.run_dir or runs/run-<time>)")

    eda = commands.add_parser("eda", help="write an exploratory report of the data and the targets")
    eda.add_argument("--config", required=True, help="YAML config file")
    eda.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    eda.add_argument("--out", help="report directory (default: runs/eda-<config name>)")
    return parser


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", module="keras")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="mtl: %(message)s", stream=sys.stderr)
    _quiet_tensorflow()
    try:
        if args.command == "train":
            return _train(args)
        return _eda(args)
    except MtlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _train(args: argparse.Namespace) -> int:
    from mtl.config import load_config
    from mtl.training import resume, train

    if args.resume:
        if args.set or args.run_dir:
            raise MtlError("--resume continues a run as it was configured; drop --set and --run-dir")
        result = resume(args.resume)
    else:
        result = train(load_config(args.config, args.set), args.run_dir)
    print(f"run directory: {result.run_dir}")
    for split in ("val", "test"):
        for task, scores in result.metrics[split].items():
            shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if k != "n")
            print(f"{split:>4} {task}: {shown} (n={scores['n']})")
    return 0


def _eda(args: argparse.Namespace) -> int:
    from mtl.config import load_config
    from mtl.eda import write_eda_report

    config = load_config(args.config, args.set)
    out = Path(args.out or f"runs/eda-{Path(args.config).stem}")
    report = write_eda_report(config, out)
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
