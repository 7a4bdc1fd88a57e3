"""The `recguard` command line: run, validate, report, schema, corrupt, compile."""

from __future__ import annotations

import argparse
import contextlib
import glob
import logging
import os
import re
import sys
import time
import traceback

# TensorFlow's C++ start-up notices; must be set before TensorFlow loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pipeline  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.dataset import (  # noqa: E402
    DEFAULT_PATH,
    DescriptionError,
    load_description,
)

DEFAULT_OUT = "runs/default"
EXIT_BLOCKED = 2
EXIT_NON_FINITE = 3
EXIT_FAILED = 1


class ProgressHandler(logging.Handler):
    """Prints one line per component from LocalDagRunner's log records."""

    def __init__(self, stream=sys.stdout):
        super().__init__(level=logging.INFO)
        self.stream = stream
        self.timings: list[dict] = []
        self._current: dict | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return
        running = re.match(r"Component (\S+) is running\.", message)
        if running:
            self._current = {"node": running.group(1), "start": time.time(), "cached": False}
            print(f"  {self._current['node']:<18} running ...", file=self.stream, flush=True)
            return
        if message.startswith("A cached execution") and self._current:
            self._current["cached"] = True
            return
        finished = re.match(r"Component (\S+) is finished\.", message)
        if finished and self._current:
            self._current["seconds"] = time.time() - self._current["start"]
            self.timings.append(self._current)
            note = " (cached)" if self._current["cached"] else ""
            print(
                f"  {self._current['node']:<18} done in {self._current['seconds']:.1f} s{note}",
                file=self.stream,
                flush=True,
            )
            self._current = None

    def failed_node(self) -> str | None:
        return self._current["node"] if self._current else None

    def end_running(self, outcome: str) -> None:
        """Print the line that ends a component that did not finish.

        Args:
            outcome: What stopped it, such as "blocked" or "failed".
        """
        if self._current is None:
            return
        seconds = time.time() - self._current["start"]
        print(
            f"  {self._current['node']:<18} {outcome} after {seconds:.1f} s",
            file=self.stream,
            flush=True,
        )


def _configure_logging(
    verbose: bool, log_file: str | None, console=None
) -> ProgressHandler:
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        # Handlers that libraries installed print every TFX and Beam record;
        # without --verbose only errors pass, and the progress lines below.
        handler.setLevel(logging.INFO if verbose else logging.ERROR)
    absl_handler = absl_logging.get_absl_handler()
    absl_handler.setLevel(logging.INFO if verbose else logging.ERROR)
    if log_file:
        os.makedirs(os.path.dirname(log_file), exist_ok=True)
        file_handler = logging.FileHandler(log_file, mode="w")
        file_handler.setLevel(logging.INFO)
        file_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        root.addHandler(file_handler)
    progress = ProgressHandler(console or sys.stdout)
    root.addHandler(progress)
    return progress


def _find_error(exc: BaseException, types: tuple) -> BaseException | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, types):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        help="folder with the CSV files (default: the description's data_dir, "
        "the bundled December 2010 slice)",
    )
    parser.add_argument(
        "--description",
        default=DEFAULT_PATH,
        help="dataset description YAML: column roles, policy, model settings "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--schema",
        help="curated schema (text proto) used as the data contract "
        "(default: schema/schema.pbtxt)",
    )
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help="run directory: pipeline root, metadata store, report, pushed model "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--pipeline-root",
        help="folder or gs:// path for the components' artifacts; workers on Dataflow "
        "or a cluster must be able to read it (default: OUT/pipeline_root)",
    )
    parser.add_argument(
        "--beam-preset",
        default="local",
        help="Beam runner preset: local (in-process DirectRunner), multiprocess "
        "(DirectRunner, one process per CPU), flink, spark, dataflow "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--beam-arg",
        action="append",
        default=[],
        metavar="FLAG=VALUE",
        help="extra Beam pipeline argument, appended after the preset's; repeatable, "
        "e.g. --beam-arg=--direct_num_workers=4",
    )
    parser.add_argument(
        "--component-beam-arg",
        action="append",
        default=[],
        metavar="NODE:FLAG=VALUE",
        help="Beam argument for one component only, e.g. "
        "Transform:--direct_num_workers=1; repeatable",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="rerun every component even if its inputs are unchanged"
    )
    parser.add_argument("--verbose", action="store_true", help="print TFX and Beam logs")


def _parse_component_args(values: list[str]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for value in values:
        node, sep, flag = value.partition(":")
        if not sep or not flag:
            raise SystemExit(
                f"error: --component-beam-arg {value!r} is invalid; use NODE:FLAG=VALUE, "
                "e.g. Transform:--direct_num_workers=1"
            )
        result.setdefault(node, []).append(flag)
    return result


def _absolute_unless_uri(path: str | None) -> str | None:
    if not path or "://" in path:
        return path
    return os.path.abspath(path)


def _resolve_data_dir(path: str) -> str | None:
    """Returns the absolute data folder, or None when it does not exist.

    A path with a scheme (gs://, s3://) is checked through tf.io.gfile.
    """
    if "://" in path:
        import tensorflow as tf

        return path if tf.io.gfile.isdir(path) else None
    path = os.path.abspath(path)
    return path if os.path.isdir(path) else None


def _run_pipeline(args, stop_after_gate: bool) -> int:
    from pipeline import beam_config

    try:
        description = load_description(args.description)
    except DescriptionError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    data_dir = _resolve_data_dir(args.data or description.data_dir)
    if data_dir is None:
        data_path = args.data or description.data_dir
        problem = "is a file, not a folder" if os.path.isfile(data_path) else "not found"
        print(
            f"error: data folder {data_path} {problem}; pass --data with a folder of CSV files",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if "://" not in data_dir and not glob.glob(os.path.join(data_dir, description.file_pattern)):
        print(
            f"error: data folder {data_dir} has no file matching "
            f"{description.file_pattern!r}; pass --data with a folder of CSV files",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if args.schema and "://" not in args.schema and not os.path.isfile(args.schema):
        print(
            f"error: schema file {args.schema} not found; pass --schema with a text "
            "proto schema, or leave it out to use schema/schema.pbtxt",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        print(
            f"error: run directory {args.out} is a file; pass --out with a folder "
            "path, new or from an earlier run",
            file=sys.stderr,
        )
        return EXIT_FAILED
    try:
        beam_args = beam_config.beam_args(args.beam_preset, args.beam_arg)
    except beam_config.BeamConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED

    out = os.path.abspath(args.out)
    log_path = os.path.join(out, "logs", "run.log")
    # The progress lines go to the terminal even while file descriptors 1
    # and 2 point at the run log.
    console = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    progress = _configure_logging(args.verbose, log_path, console)
    # Imported after the cheap checks, because these load TensorFlow and
    # TFX, whose start-up notices go to the run log.
    with _output_to_log(log_path, enabled=not args.verbose):
        from components import memory
        from pipeline import runner, summary
    # Each Beam component ends with a full garbage collection
    # (components/memory.py), which then skips the imported modules.
    memory.freeze_startup_objects()
    print(f"recguard: {description.name} from {data_dir}")
    print(f"run directory: {out}", flush=True)
    started = time.time()
    try:
        with _output_to_log(log_path, enabled=not args.verbose):
            runner.run(
                description=description,
                data_dir=data_dir,
                out_dir=out,
                pipeline_root=_absolute_unless_uri(args.pipeline_root),
                schema_path=args.schema,
                train_steps=getattr(args, "steps", None),
                beam_pipeline_args=beam_args,
                component_beam_args=_parse_component_args(args.component_beam_arg),
                stop_after_gate=stop_after_gate,
                enable_cache=not args.no_cache,
                package_user_modules=args.beam_preset not in beam_config.LOCAL_PRESETS,
            )
    except Exception as e:  # noqa: BLE001 - every failure gets a message and exit code
        return _report_failure(e, out, progress)
    elapsed = time.time() - started
    print(summary.render(out, progress.timings, elapsed, stop_after_gate))
    return 0


@contextlib.contextmanager
def _output_to_log(log_path: str, enabled: bool):
    """Points file descriptors 1 and 2 at the run log while the pipeline runs.

    TFX builds its user-module wheel and installs it with pip in
    subprocesses, and TensorFlow's C++ code logs to descriptor 2. None of
    that goes through Python's logging, so only redirecting the descriptors
    keeps it off the terminal. The run log keeps all of it.
    """
    if not enabled:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        for fd in (saved_out, saved_err, log_fd):
            os.close(fd)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid; pass a whole number >= 1")
    return value


def _report_failure(error: BaseException, out: str, progress: ProgressHandler) -> int:
    from components.anomaly_gate import GateBlockedError
    from components.guarded_loop import NonFiniteTrainingError
    from components.post_transform_gate import NonFiniteTransformOutputError

    log_path = os.path.join(out, "logs", "run.log")
    with open(log_path, "a", encoding="utf-8") as f:
        traceback.print_exception(type(error), error, error.__traceback__, file=f)
    blocked = _find_error(error, (GateBlockedError,))
    if blocked is not None:
        progress.end_running("blocked")
        print(f"\nBLOCKED: {blocked}", file=sys.stderr)
        return EXIT_BLOCKED
    non_finite = _find_error(error, (NonFiniteTransformOutputError, NonFiniteTrainingError))
    if non_finite is not None:
        progress.end_running("stopped")
        print(f"\nSTOPPED: {non_finite}", file=sys.stderr)
        return EXIT_NON_FINITE
    progress.end_running("failed")
    node = progress.failed_node() or "the pipeline"
    print(
        f"\nerror: {node} failed: {type(error).__name__}: {error}\n"
        f"The full traceback is in {log_path}; rerun with --verbose for all logs.",
        file=sys.stderr,
    )
    return EXIT_FAILED


def _cmd_report(args) -> int:
    from components import report

    path = os.path.join(os.path.abspath(args.run_dir), "report", "report.json")
    if not os.path.exists(path):
        print(
            f"error: no report at {path}; run `recguard run` or `recguard validate` "
            "with --out pointing at this folder first",
            file=sys.stderr,
        )
        return EXIT_FAILED
    loaded = report.load_report(path)
    paths = report.write_report(loaded, os.path.dirname(path))
    print(report.render_markdown(loaded))
    print(f"HTML report: {paths['html']}")
    return 0


def _cmd_schema(args) -> int:
    from pipeline import schema_draft

    try:
        description = load_description(args.description)
    except DescriptionError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    data_dir = os.path.abspath(args.data or description.data_dir)
    try:
        schema_draft.write_draft(description, data_dir, args.out)
    except schema_draft.SchemaDraftError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(f"wrote the curated schema draft to {args.out}")
    return 0


def _cmd_corrupt(args) -> int:
    from pipeline import corrupt

    return corrupt.run_from_args(args)


def _cmd_compile(args) -> int:
    from pipeline import vertex

    try:
        description = load_description(args.description)
    except DescriptionError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    path = vertex.compile_vertex(
        description,
        out_file=args.out,
        pipeline_root=args.pipeline_root,
        data_dir=args.data or description.data_dir,
        beam_pipeline_args=args.beam_arg,
        component_beam_args=_parse_component_args(args.component_beam_arg),
        schema_path=args.schema or "",
        image=args.image,
    )
    print(f"wrote the Vertex AI pipeline spec to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recguard",
        description="TFX pipeline for recommenders trained on dirty interaction logs.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="run the whole pipeline (default: bundled data)")
    _add_data_arguments(run)
    run.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        help="training steps (default: the description's model.train_steps, else 1000)",
    )
    run.set_defaults(handler=lambda a: _run_pipeline(a, stop_after_gate=False))

    validate = commands.add_parser(
        "validate", help="run ExampleGen through the anomaly gate and print the report"
    )
    _add_data_arguments(validate)
    validate.set_defaults(handler=lambda a: _run_pipeline(a, stop_after_gate=True))

    report_cmd = commands.add_parser("report", help="render the last run's report again")
    report_cmd.add_argument("run_dir", nargs="?", default=DEFAULT_OUT, help="run directory (default: %(default)s)")
    report_cmd.set_defaults(handler=_cmd_report)

    schema = commands.add_parser(
        "schema", help="write a curated schema draft from data and its description"
    )
    schema.add_argument("--data", help="folder with the CSV files (default: the description's data_dir)")
    schema.add_argument("--description", default=DEFAULT_PATH, help="dataset description YAML")
    schema.add_argument("--out", required=True, help="schema file to write (text proto)")
    schema.set_defaults(handler=_cmd_schema)

    try:
        from pipeline import corrupt
    except ImportError:  # pragma: no cover - the module ships with the package
        corrupt = None
    if corrupt is not None:
        corrupt_cmd = commands.add_parser(
            "corrupt", help="write a corrupted copy of a CSV dataset and a manifest of changes"
        )
        corrupt.add_arguments(corrupt_cmd)
        corrupt_cmd.set_defaults(handler=_cmd_corrupt)

    compile_cmd = commands.add_parser(
        "compile", help="compile the pipeline for an orchestrator (Vertex AI)"
    )
    compile_cmd.add_argument("--target", choices=["vertex"], default="vertex", help="orchestrator")
    compile_cmd.add_argument("--out", required=True, help="pipeline spec JSON file to write")
    compile_cmd.add_argument("--description", default=DEFAULT_PATH, help="dataset description YAML")
    compile_cmd.add_argument("--data", help="data folder as the workers see it, e.g. gs://bucket/data")
    compile_cmd.add_argument(
        "--pipeline-root", default="gs://YOUR_BUCKET/recguard", help="pipeline root as the workers see it"
    )
    compile_cmd.add_argument("--image", default="", help="container image with recguard installed")
    compile_cmd.add_argument("--beam-arg", action="append", default=[], help="Beam argument; repeatable")
    compile_cmd.add_argument(
        "--component-beam-arg",
        action="append",
        default=[],
        metavar="NODE:FLAG=VALUE",
        help="Beam argument for one component only; repeatable",
    )
    compile_cmd.add_argument(
        "--schema",
        help="curated schema as the containers see it, e.g. gs://bucket/schema.pbtxt "
        "(default: schema/schema.pbtxt of this checkout)",
    )
    compile_cmd.set_defaults(handler=_cmd_compile)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_FAILED
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
