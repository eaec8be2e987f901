"""The ``mtl`` command line: ``mtl train``, ``tune``, ``eda``, ``export``, ``predict``, ``serve``, ``embed``,
``evaluate`` and ``compare``.

Bad input ends with one line ``error: <what and where>`` on stderr and exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings
from pathlib import Path

from mtl._progress import STARTUP_NOISE  # noqa: F401  the lines the CLI keeps quiet, public here
from mtl.errors import MtlError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
EXIT_TERMINATED = 143  # 128 + SIGTERM


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
    train.add_argument("--allow-data-change", action="store_true",
                       help="with --resume: continue even though the data differs from the run's (recorded in "
                            "metrics.json)")
    # data-parallel training on tf.distribute (issue 12, docs/scaling.md)
    train.add_argument("--workers", type=int, metavar="N",
                       help="train in N local worker processes joined by TF_CONFIG on loopback ports")
    train.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                       help="train in --workers N (default 2) Ray Train workers; ADDRESS joins a running Ray cluster "
                            "(default: a local one). Needs the mtl[ray] extra")

    tune = commands.add_parser("tune", help="search the config's tune.space with Optuna, one run per trial")
    tune.add_argument("--config", required=True, help="YAML config file with a tune section")
    tune.add_argument("--trials", type=int, required=True,
                      help="trials in the study in all; a re-run continues it and runs only the missing ones")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    tune.add_argument("--out", help="tune directory (default: runs/tune-<config name>)")

    eda = commands.add_parser("eda", help="write an exploratory report of the data and the targets")
    eda.add_argument("--config", required=True, help="YAML config file")
    eda.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    eda.add_argument("--out", help="report directory (default: runs/eda-<config name>)")

    export = commands.add_parser("export", help="export a run's model as a TF Serving SavedModel")
    export.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory (holds model.keras)")
    export.add_argument("--base-path", default="exports", help="export base folder (default: exports)")
    export.add_argument("--name", required=True, help="model name: the export goes to BASE_PATH/NAME/<version>")
    export.add_argument("--version", type=int, help="integer version (default: one more than the highest)")

    predict = commands.add_parser("predict", help="predict rows with a run or an export")
    predict.add_argument("--model", required=True, metavar="PATH",
                         help="a run directory, an export version folder, or an export base (newest version)")
    rows = predict.add_mutually_exclusive_group(required=True)
    rows.add_argument("--input",
                      help="rows to predict: .csv, .tsv, .parquet, .jsonl or .json (one raw feature per column)")
    rows.add_argument("--row", help="one row as a JSON object, e.g. '{\"age\": 39, ...}'")
    rows.add_argument("--text", help="one text, for a model whose only input is a text column")
    predict.add_argument("--output", help="write the predictions to this CSV (default: print them)")
    predict.add_argument("--task", help="only this task's columns")
    _add_predict_workflow_arguments(predict)

    embed = commands.add_parser("embed", help="L2-normalised sentence embeddings from a backbone or a run")
    embed.add_argument("--model", help="a run directory, a backbone preset or directory (default: all-MiniLM-L6-v2)")
    texts = embed.add_mutually_exclusive_group(required=True)
    texts.add_argument("--text", help="one text; its vector is printed as JSON unless --output is given")
    texts.add_argument("--input", help="a text file, one sentence per line")
    embed.add_argument("--output", help="write the vectors to this .npy file ([lines, hidden], float32)")
    embed.add_argument("--batch-size", type=int, default=32)
    embed.add_argument("--max-length", type=int, default=256, help="word pieces per text for a backbone (256)")

    serve = commands.add_parser("serve", help="serve exports over TF Serving's REST and gRPC APIs")
    models = serve.add_mutually_exclusive_group(required=True)
    models.add_argument("--model_base_path", help="export base folder of one model (BASE/NAME)")
    models.add_argument("--model_config_file",
                        help="several models: TF Serving's model_config_list text proto (name, base_path, "
                             "model_version_policy, version_labels)")
    serve.add_argument("--model_name", help="the model's name in URLs (default: the base path's folder name)")
    serve.add_argument("--rest_api_port", type=int, default=8501, help="port (default 8501)")
    serve.add_argument("--rest_api_host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                       help="how often to look for a new version (default 1 s)")
    serve.add_argument("--max_request_bytes", type=int, default=16 * 1024 * 1024,
                       help="larger request bodies get HTTP 413 (default 16 MiB)")
    # TF Serving's gRPC API, batching, monitoring and the limits for hostile clients (issue 13)
    serve.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500; 0 turns gRPC off)")
    serve.add_argument("--enable_batching", action="store_true",
                       help="merge concurrent requests into one signature call")
    serve.add_argument("--batching_parameters_file",
                       help="TF Serving's BatchingParameters text proto (max_batch_size, batch_timeout_micros, "
                            "max_enqueued_batches, num_batch_threads)")
    serve.add_argument("--access_log", action=argparse.BooleanOptionalAction, default=True,
                       help="one log line per request (default on; --no-access_log turns it off)")
    serve.add_argument("--max_header_bytes", type=int, default=16 * 1024,
                       help="request line and headers larger than this get HTTP 431 (default 16 KiB)")
    serve.add_argument("--http_header_timeout_seconds", type=float, default=10.0,
                       help="a request's headers must arrive within this time (default 10 s)")
    serve.add_argument("--http_body_timeout_seconds", type=float, default=60.0,
                       help="a request's body must arrive within this time after its headers (default 60 s)")
    serve.add_argument("--http_idle_timeout_seconds", type=float, default=15.0,
                       help="a connection with no request in progress is closed after this time (default 15 s)")
    serve.add_argument("--max_connections", type=int,
                       help="open HTTP connections at most; more get HTTP 503 (default: half the open-file limit)")
    _add_workflow_commands(commands)
    # --debug before or after the command (a subcommand's default would overwrite the top level's: suppressed)
    parser.add_argument("--debug", action="store_true", help="show TensorFlow's start-up and log lines")
    for command in commands.choices.values():
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show TensorFlow's start-up and log lines")
    return parser


def _add_predict_workflow_arguments(predict: argparse.ArgumentParser) -> None:
    """``mtl predict --keep`` and ``--threshold`` (issue 15)."""
    predict.add_argument("--keep", nargs="+", action="extend", default=[], metavar="COLUMN",
                         help="pass these input columns (IDs, ...) through to the predictions, first")
    predict.add_argument("--threshold", action="append", default=[], metavar="TASK=VALUE",
                         help="label TASK's rows positive from this probability instead of the model's threshold "
                              "(repeatable)")


def _add_workflow_commands(commands: argparse._SubParsersAction) -> None:
    """``mtl evaluate`` and ``mtl compare`` (issue 15)."""
    evaluate = commands.add_parser("evaluate", help="score a run or an export on a labelled file")
    evaluate.add_argument("model", metavar="RUN_OR_EXPORT",
                          help="a run directory, an export version folder, or an export base (newest version)")
    evaluate.add_argument("--data", required=True,
                          help="labelled rows: .csv, .tsv, .parquet, .jsonl, .json or .conll (the task columns "
                               "of the run's config)")
    evaluate.add_argument("--out", help="where metrics.json and plots/ go (default: runs/evaluate-<data name>)")

    compare = commands.add_parser("compare", help="compare finished runs: test metrics, config differences and "
                                                  "the multi-task delta over a baseline")
    compare.add_argument("runs", nargs="+", metavar="RUN", help="finished run directories")
    compare.add_argument("--baseline", action="append", default=[], metavar="RUN",
                         help="baseline run for the multi-task delta (repeatable: e.g. one single-task run per "
                              "task)")
    compare.add_argument("--format", choices=("table", "markdown", "csv"), default="table",
                         help="terminal table (default), Markdown or CSV")
    compare.add_argument("--output", help="write the comparison to this file (default: print it)")


def _quiet_tensorflow(debug: bool) -> None:
    """Import TensorFlow without its start-up lines (``mtl._progress``); ``--debug`` shows them and TF's logs."""
    if debug:
        return
    warnings.filterwarnings("ignore", module="keras")
    from mtl._progress import quiet_tensorflow_startup

    quiet_tensorflow_startup()


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C (the same cleanup and line), with its own exit code."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="mtl: %(message)s", stream=sys.stderr)
    _quiet_tensorflow(args.debug)
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (main() called from a worker thread): leave SIGTERM alone
        previous = None
    try:
        handlers = {"train": _train, "tune": _tune, "eda": _eda, "export": _export, "predict": _predict,
                    "serve": _serve, "embed": _embed, "evaluate": _evaluate, "compare": _compare}
        return handlers[args.command](args)
    except MtlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:
        print("error: interrupted", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _train(args: argparse.Namespace) -> int:
    from mtl.config import load_config
    from mtl.training import resume, run_worker, train

    if args.resume:
        if args.set or args.run_dir:
            raise MtlError("--resume continues a run as it was configured; drop --set and --run-dir")
    elif args.allow_data_change:
        raise MtlError("--allow-data-change only goes with --resume", where="--allow-data-change")
    if args.workers is not None or args.ray is not None:
        return _train_workers(args)
    if args.resume:
        config = load_config(Path(args.resume) / "config.yaml") if (Path(args.resume) / "config.yaml").is_file() \
            else None
        if config is not None and config.training.distribute.strategy != "none" and not args.allow_data_change:
            result = run_worker(config, args.resume)
        else:
            result = resume(args.resume, allow_data_change=args.allow_data_change)
    else:
        config = load_config(args.config, args.set)
        distributed = config.training.distribute.strategy != "none"
        result = run_worker(config, args.run_dir) if distributed else train(config, args.run_dir)
    if not result.metrics:  # a worker of a distributed run: the chief reports
        print(f"worker finished (the chief writes the run directory; scratch {result.run_dir} removed)")
        return 0
    _print_result(result.run_dir, result.metrics)
    return 0


def _train_workers(args: argparse.Namespace) -> int:
    """``mtl train --workers N`` / ``--ray``: start the workers, fail as one, report like one run."""
    import json
    import time

    from mtl.config import load_config
    from mtl.training import check_several_workers, launch_ray, launch_workers, resumable, worker_arguments
    from mtl.training._run import _holds_files, _not_empty

    workers = args.workers if args.workers is not None else 2
    if workers < 1:
        raise MtlError(f"must be at least 1, got {workers}", where="--workers")
    if args.resume:
        run_dir = Path(args.resume)
        if not resumable(run_dir):
            raise MtlError(f"{run_dir} is not an unfinished run with a checkpoint", where="--resume")
        config = load_config(run_dir / "config.yaml")
        if config.training.distribute.strategy != "multi_worker":
            raise MtlError(f"{run_dir} was not trained by workers (training.distribute.strategy is "
                           f"{config.training.distribute.strategy}); resume it without --workers", where="--resume")
    else:
        config = load_config(args.config, [*args.set, "training.distribute.strategy=multi_worker"])
        run_dir = Path(args.run_dir or config.output.run_dir or f"runs/run-{time.strftime('%Y%m%d-%H%M%S')}")
        if run_dir.exists() and _holds_files(run_dir) and not resumable(run_dir):
            raise _not_empty(run_dir)
    check_several_workers(config)
    created = not run_dir.exists()
    max_restarts = config.training.distribute.max_restarts
    if args.ray is not None:
        launch_ray(workers, config, run_dir, max_restarts, address=args.ray or None)
    else:
        launch_workers(workers, worker_arguments(args, run_dir), run_dir, max_restarts, created)
    _print_result(run_dir, json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")))
    return 0


def _print_result(run_dir: Path, metrics: dict) -> None:
    print(f"run directory: {run_dir}")
    for split in ("val", "test"):
        for task, scores in metrics[split].items():
            shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if k != "n")
            print(f"{split:>4} {task}: {shown} (n={scores['n']})")


def _tune(args: argparse.Namespace) -> int:
    from mtl.tuning import BEST_CONFIG_FILE, TRIALS_FILE, tune

    result = tune(args.config, args.trials, args.out, args.set)
    print(f"tune directory: {result.out_dir}: {result.trials} trials ({result.new_trials} new), "
          f"{result.failed} failed")
    print(f"best: trial {result.best_trial}, {result.objective} {result.best_value:.4f} ({result.best_run_dir})")
    for key, value in result.best_params.items():
        print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    print(f"trials: {result.out_dir / TRIALS_FILE}")
    print(f"best config: {result.out_dir / BEST_CONFIG_FILE} (mtl train --config {result.out_dir / BEST_CONFIG_FILE})")
    return 0


def _eda(args: argparse.Namespace) -> int:
    from mtl.config import load_config
    from mtl.eda import write_eda_report

    config = load_config(args.config, args.set)
    out = Path(args.out or f"runs/eda-{Path(args.config).stem}")
    report = write_eda_report(config, out)
    print(f"report: {report}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from mtl.export import export_run

    print(f"exported: {export_run(args.run_dir, args.base_path, args.name, args.version)}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import tempfile

    from mtl.serving._predict import predict_command

    model = Path(args.model)
    if (model / "model.keras").is_file():  # a run directory: export it to a temporary folder, then predict
        from mtl.export import export_run

        with tempfile.TemporaryDirectory(prefix="mtl-predict-") as tmp:
            return predict_command(export_run(model, tmp, "run"), args)
    return predict_command(model, args)


def _evaluate(args: argparse.Namespace) -> int:
    from mtl.evaluation import evaluate_file

    out = Path(args.out or f"runs/evaluate-{Path(args.data).stem}")
    result = evaluate_file(args.model, args.data, out)
    print(f"evaluation: {result.out_dir / 'metrics.json'}")
    for task, scores in result.metrics.items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if k != "n")
        print(f"{task}: {shown} (n={scores['n']})")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from mtl.evaluation import compare_runs, format_comparison

    text = format_comparison(compare_runs(args.runs, args.baseline), args.format)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise MtlError(f"cannot write: {exc.strerror}", where=f"--output {args.output}") from None
        print(f"comparison: {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _embed(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from mtl.model._embed import SentenceEmbedder

    if args.input is not None:
        path = Path(args.input)
        if not path.is_file():
            raise MtlError("no such file", where=f"--input {path}")
        texts = path.read_text(encoding="utf-8").splitlines()
        if not texts:
            raise MtlError("holds no lines", where=f"--input {path}")
        if args.output is None:
            raise MtlError("--input needs --output (a .npy file for the vectors)", where="--output")
    else:
        texts = [args.text]
    if args.output is not None and not args.output.endswith(".npy"):
        raise MtlError(f"{args.output!r} must end in .npy", where="--output")
    if args.batch_size < 1 or args.max_length < 8:
        raise MtlError("--batch-size must be >= 1 and --max-length >= 8", where="mtl embed")
    vectors = SentenceEmbedder.load(args.model, args.max_length, args.batch_size).embed(texts)
    if args.output is None:
        print(json.dumps([round(float(v), 7) for v in vectors[0]]))
        return 0
    out = Path(args.output)
    tmp = out.with_name(f".{out.stem}.tmp.npy")
    np.save(tmp, vectors)
    os.replace(tmp, out)
    print(f"embeddings: {out} ({vectors.shape[0]} x {vectors.shape[1]})", file=sys.stderr)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from mtl.serving._rest import serve

    serve(args.model_base_path, args.model_name, port=args.rest_api_port, host=args.rest_api_host,
          poll_seconds=args.file_system_poll_wait_seconds, max_request_bytes=args.max_request_bytes,
          grpc_port=args.port or None, model_config_file=args.model_config_file,
          enable_batching=args.enable_batching, batching_parameters_file=args.batching_parameters_file,
          access_log=args.access_log, max_header_bytes=args.max_header_bytes,
          header_timeout=args.http_header_timeout_seconds, body_timeout=args.http_body_timeout_seconds,
          idle_timeout=args.http_idle_timeout_seconds, max_connections=args.max_connections)
    return 0


if __name__ == "__main__":
    sys.exit(main())
