"""The `tweet-producer` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from daemon.config import DEFAULT_CONFIG_PATH, Config, load_config
from daemon.yamlsource import ConfigError

EXIT_INVALID_CONFIG = 2
EXIT_FAILED = 1
# An unexpected loader exception is shown on one line, cut to this length.
MAX_DETAIL_CHARS = 200


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG_PATH, help="config file (default: config.yaml)")


def _load(path: Path) -> Config | None:
    """The validated config, or None after printing every problem as `FILE:LINE: key: problem`."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{path}: {len(exc.problems)} problem(s); nothing was started", file=sys.stderr)
        return None
    except Exception as exc:  # noqa: BLE001 - the loader is meant to raise only ConfigError; if it ever does
        # not, the user still gets the file named and exit 2 rather than a traceback, and a line to report.
        detail = " ".join(str(exc).split())[:MAX_DETAIL_CHARS]
        print(f"{path}: cannot load the config ({type(exc).__name__}: {detail}); please report this bug", file=sys.stderr)
        return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tweet-producer", description="Ship tweets and other JSON events into Amazon Kinesis.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the producer daemon (and the embedded stack when enabled)")
    _add_config_option(run)

    check = commands.add_parser("check-config", help="validate a config file; exit 2 listing every problem")
    _add_config_option(check)

    table = commands.add_parser("table", help="print the items of the stack's EventData table")
    _add_config_option(table)
    table.add_argument("--limit", type=int, default=None, help="print at most N items")
    table.add_argument("--json", action="store_true", help="print a JSON array of the items")
    table.add_argument(
        "--profile", default=None, help="AWS profile allowed to scan the table (the producer's own profile is not)"
    )

    configure = commands.add_parser("configure", help="point the config at a deployed stack (writes 0600 credentials)")
    _add_config_option(configure)
    configure.add_argument("--from-stack", required=True, metavar="NAME", help="the deployed CloudFormation stack")
    configure.add_argument("--region", default=None, help="the stack's region (default: the AWS chain's)")
    configure.add_argument("--profile", default=None, help="AWS profile allowed to read the stack and its secret")
    configure.add_argument("--endpoint-url", default=None, help="a non-AWS endpoint (tests, local stacks)")
    configure.add_argument(
        "--credentials-file",
        type=Path,
        default=Path("~/.aws/credentials").expanduser(),
        help="where the producer's key is written, mode 0600 (default: ~/.aws/credentials)",
    )

    from cli.status import add_arguments as add_status_arguments

    add_status_arguments(commands.add_parser("status", help="a live view of a running daemon, read from its /metrics"))

    sample = commands.add_parser("sample", help="write deterministic sample tweets (X API v2 stream lines)")
    sample.add_argument("-n", "--count", type=int, default=3000)
    sample.add_argument("--seed", type=int, default=2015)
    sample.add_argument("-o", "--output", type=Path, required=True)
    return parser


def _configure(args: argparse.Namespace) -> int:
    from cli.configure import ConfigureError, configure_from_stack

    try:
        result = configure_from_stack(
            args.from_stack,
            region=args.region,
            config_path=args.config,
            credentials_path=args.credentials_file,
            endpoint_url=args.endpoint_url,
            profile=args.profile,
        )
    except ConfigureError as exc:
        print(f"tweet-producer configure: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print("\n".join(result.summary()))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "sample":
        from cli.sample import write_sample

        write_sample(args.output, args.count, args.seed)
        return 0

    if args.command == "configure":
        return _configure(args)

    if args.command == "status":
        from cli.status import main_status

        return main_status(args, _load)

    config = _load(args.config)
    if config is None:
        return EXIT_INVALID_CONFIG
    if args.command == "check-config":
        print(f"{args.config}: OK ({len(config.sources)} source(s), sink {config.sink.type})")
        return 0
    if args.command == "table":
        from cli.table import TableUnavailable, print_items, read_items

        try:
            print_items(read_items(config, args.limit, profile=args.profile), args.json)
        except TableUnavailable as exc:
            print(f"tweet-producer table: {exc}", file=sys.stderr)
            return EXIT_FAILED
        return 0

    from daemon.app import run
    from daemon.logs import configure_logging

    configure_logging(config.log.level, config.log.format)
    return run(config, args.config)


if __name__ == "__main__":
    sys.exit(main())
