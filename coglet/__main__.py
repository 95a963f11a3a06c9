"""python -m coglet [REF] [--host H] [--port P] [--await-explicit-shutdown] [--train] [--upload-url U]
python -m coglet [REF] --redis-url redis://HOST:PORT/DB --input-queue Q --consumer-id C
    [--upload-url U] [--predict-timeout S] [--report-setup-run-url URL] [--max-failure-count N] [--port P]
python -m coglet schema [REF] [--train] [--generate]

Serves a predictor over HTTP, or takes its predictions from a Redis Stream (pull mode,
docs/queue.md), or prints the OpenAPI schema it would serve. REF is
`predict.py:Predictor`, `predict.py`, or `module:Name`; without it the `predict:` (or with
--train, `train:`) entry of ./cog.yaml is used.
"""

import os
import sys

import coglet

# argparse (and re, enum) cost ~5 ms of start-up; the usual command lines are read without
# them, anything else (--help, --version, abbreviations, errors) goes through argparse.


def _ref_from_cog_yaml(key, path="cog.yaml"):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    try:
        import yaml

        data = yaml.safe_load(text) or {}
        value = data.get(key) if isinstance(data, dict) else None
        return str(value) if value else None
    except ImportError:
        import re

        m = re.search(r"^%s:\s*['\"]?([^'\"\n#]+?)['\"]?\s*(#.*)?$" % key, text, re.MULTILINE)
        return m.group(1).strip() if m else None


def schema_main(argv):
    import argparse
    import json

    parser = argparse.ArgumentParser(
        prog="python -m coglet schema",
        description="Print the OpenAPI schema the server would serve: .cog/openapi_schema.json when "
        "present, else one generated from the predictor's signature.",
    )
    parser.add_argument("ref", nargs="?", help="predictor reference, e.g. predict.py:Predictor")
    parser.add_argument("--train", action="store_true", help="include train() (train mode)")
    parser.add_argument("--generate", action="store_true", help="ignore .cog/openapi_schema.json")
    args = parser.parse_args(argv)
    ref = args.ref or _ref_from_cog_yaml("train" if args.train else "predict")
    if ref is None:
        parser.error("no REF given and no predict: entry in ./cog.yaml")
    from coglet import _runtime

    pred = _runtime.Predictor(ref, args.train)
    if args.generate:
        schema = _runtime.generate_schema(pred)
    else:
        schema = _runtime.read_schema(pred)
    if schema is None:
        print("no schema: the predictor's signature could not be read", file=sys.stderr)
        return 1
    json.dump(schema, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


_VALUE_OPTIONS = {"--host": "host", "--port": "port", "--upload-url": "upload_url"}
_FLAG_OPTIONS = {"--await-explicit-shutdown": "await_explicit_shutdown", "--train": "train"}


def _quick_args(argv):
    """The arguments as argparse would read them, for command lines made only of REF and the
    exact long options; None for anything else."""
    out = {"ref": None, "host": "0.0.0.0", "port": None, "upload_url": None, "await_explicit_shutdown": False,
           "train": False, "redis_url": None, "input_queue": None, "consumer_id": None, "predict_timeout": 0.0,
           "report_setup_run_url": None, "max_failure_count": -1}
    i = 0
    while i < len(argv):
        a = argv[i]
        name, eq, value = a.partition("=")
        if name in _VALUE_OPTIONS:
            if not eq:
                if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                    return None
                i += 1
                value = argv[i]
            out[_VALUE_OPTIONS[name]] = value
        elif a in _FLAG_OPTIONS:
            out[_FLAG_OPTIONS[a]] = True
        elif a.startswith("-") or out["ref"] is not None:
            return None
        else:
            out["ref"] = a
        i += 1
    try:
        port = out["port"] if out["port"] is not None else os.environ.get("PORT") or None
        out["port"] = int(port) if port is not None else None
    except ValueError:
        return None
    return out


class _Args:
    def __init__(self, d):
        self.__dict__.update(d)


def _parse(argv):
    """(args, parser or None)."""
    quick = _quick_args(argv)
    if quick is not None:
        return _Args(quick), None
    parser = _parser()
    return parser.parse_args(argv), parser


def _parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m coglet",
        description="Serve a Cog predictor over HTTP (coglet %s)." % coglet.__version__,
        epilog="Without REF, the predict: (or train:) entry of ./cog.yaml is served. "
        "Environment: COG_MAX_CONCURRENCY, COG_SETUP_TIMEOUT, COG_LOG_LEVEL, LOG_FORMAT, "
        "WEBHOOK_AUTH_TOKEN.",
    )
    parser.add_argument("ref", nargs="?", help="predictor reference, e.g. predict.py:Predictor")
    parser.add_argument("--host", default="0.0.0.0", help="IP address to bind (default 0.0.0.0)")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ["PORT"]) if os.environ.get("PORT") else None,
        help="port (default $PORT or 5000; 0 = any); in pull mode HTTP is served only when given",
    )
    parser.add_argument(
        "--await-explicit-shutdown",
        action="store_true",
        help="ignore SIGTERM; exit on POST /shutdown or SIGINT",
    )
    parser.add_argument("--train", action="store_true", help="train mode: every request runs train()")
    parser.add_argument("--upload-url", default=None, help="PUT file outputs to this URL prefix")
    queue = parser.add_argument_group("pull mode (docs/queue.md)")
    queue.add_argument("--redis-url", default=None, help="take predictions from Redis: redis://HOST:PORT/DB")
    queue.add_argument("--input-queue", default=None, help="the stream (and consumer group) to read")
    queue.add_argument("--consumer-id", default=None, help="this consumer's name in the group")
    queue.add_argument("--predict-timeout", type=float, default=0.0, help="fail a prediction after S seconds")
    queue.add_argument("--report-setup-run-url", default=None, help="POST the setup result here")
    queue.add_argument(
        "--max-failure-count", type=int, default=-1, help="exit after more than N failed predictions in a row"
    )
    parser.add_argument("--version", action="version", version="coglet %s" % coglet.__version__)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "schema":
        return schema_main(argv[1:])
    args, parser = _parse(argv)
    ref = args.ref
    if ref is None:
        key = "train" if args.train else "predict"
        ref = _ref_from_cog_yaml(key)
        if ref is None:
            (parser or _parser()).error("no REF given and no %r entry in ./cog.yaml" % key)
    kwargs = {}
    if args.redis_url:  # only argparse reads the queue flags, so parser is set
        if not args.input_queue or not args.consumer_id:
            parser.error("--redis-url needs --input-queue and --consumer-id")
        kwargs = dict(
            redis_url=args.redis_url,
            input_queue=args.input_queue,
            consumer_id=args.consumer_id,
            report_setup_run_url=args.report_setup_run_url,
            predict_timeout=args.predict_timeout,  # 0: none
            max_failure_count=args.max_failure_count,  # -1: no limit
        )
    elif args.input_queue or args.consumer_id or args.report_setup_run_url:
        (parser or _parser()).error("--input-queue, --consumer-id and --report-setup-run-url need --redis-url")
    coglet.server.serve(
        predictor_ref=ref,
        host=args.host,
        port=args.port,  # None: 5000, or no HTTP in pull mode
        await_explicit_shutdown=args.await_explicit_shutdown,
        is_train=args.train,
        upload_url=args.upload_url,
        **kwargs,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
