"""The ``servesync`` command line: one ``_cmd_<name>(args) -> int`` per subcommand.

Entry point of the console script and of ``python -m servesync``. Each
subcommand registers itself in :func:`build_parser` with
``set_defaults(func=_cmd_<name>)``; add new ones (``once``, ``plan``,
``status``, ``run``) the same way. Side effects are those of the subcommand;
this module itself only parses arguments and prints.

Exit codes: 0 success, 1 the command ran and found problems (e.g. invalid
files), 2 usage error (bad arguments, missing path, invalid config).
Commands that print a result (``validate``, ``schema``, ``status``) stop
quietly with exit 1 when stdout's reader goes away (``servesync validate . |
head``), as the Python docs advise (:mod:`signal`, "Note on SIGPIPE").

``validate --format json`` prints one object::

    {"ok": bool, "revision": null,
     "errors": [{"path", "code", "line", "pointer", "message"}: the tree's own
                errors (no users/ folder)],
     "files": [{"path": str (a folder it could not read ends in "/"), "ok": bool,
                "errors": [...file-level errors: location, size, encoding...],
                "documents": [{"index": int, "line": int, "model_id": str | null,
                               "ok": bool, "errors": [{"code", "line", "pointer",
                                                       "message"}]}]}]}
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from servesync import __version__, config, schemas
from servesync.desired import loading, validating
from servesync.desired.specs import DesiredState
from servesync.errors import ConfigError, Issue, IssueCode, SourceError
from servesync.redaction import scrub


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="servesync",
        description="GitOps for Ray Serve LLM: converge a Ray Serve cluster to the model "
        "files committed under users/<user_id>/ of a desired-state repository.",
    )
    parser.add_argument("--version", action="version", version=f"servesync {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_validate(sub)
    _add_schema(sub)
    _add_once(sub)
    _add_plan(sub)
    _add_status(sub)
    _add_run(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (argparse's own exits included).

    Called as the program (``argv`` None: the console script, ``python -m
    servesync``) after a command that loaded Ray, the process ends here with
    ``os._exit`` once output is flushed: measured with Ray 2.60 + vLLM, a
    ``servesync run`` that had deployed a model and stopped cleanly on SIGTERM
    was killed by SIGABRT in the interpreter's final garbage collection
    (exit -6 instead of 0), which systemd reports as a failed stop. Every
    resource is already released by then (lock, store, Ray connection).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error already printed
        return e.code if isinstance(e.code, int) else 2
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    code: int = args.func(args)
    if argv is None and "ray" in sys.modules:
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """Flush logs and stdio, then end the process without interpreter finalization."""
    import contextlib
    import logging
    import os

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _error(message: str) -> int:
    print(f"servesync: error: {message}", file=sys.stderr)
    return 2


Command = Callable[[argparse.Namespace], int]


def _pipe_safe(command: Command) -> Command:
    """``command``, ending quietly with exit 1 if stdout's reader goes away.

    ``servesync validate . | head`` closes the pipe after ten lines; the next
    write raises BrokenPipeError. As the Python docs advise (:mod:`signal`,
    "Note on SIGPIPE"): flush inside the ``try`` so the error is raised here,
    point stdout at /dev/null so the interpreter's final flush can't fail
    again, and exit 1 ("Python exits with error code 1 on EPIPE"). Nothing
    more is printed: the reader chose to stop reading. Only the printing
    commands are wrapped, so a broken socket elsewhere still shows its
    traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            code = command(args)
            sys.stdout.flush()
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, sys.stdout.fileno())
            finally:
                os.close(devnull)
            return 1
        return code

    return run


# --- validate -----------------------------------------------------------------------


def _add_validate(sub: Any) -> None:
    p = sub.add_parser(
        "validate",
        help="check a desired-state tree (exit 0 valid, 1 invalid, 2 usage error)",
        description="Check every users/<user_id>/**/*.yaml file of a desired-state tree "
        "as the daemon would: YAML, schema, model_source paths, allow-lists, the "
        "platform's GPUs, duplicate model_ids and the config's per-user quotas (counted "
        "after the models recorded in its state_dir, if readable). Any other *.yaml/*.yml file "
        "(dot-files and dot-folders aside) is an error, and so is a tree without "
        "users/, which the daemon refuses. Prints one line per error "
        "(path:line: <code> <json-pointer>: message) and a summary on stderr. "
        "Exit 0 all valid, 1 any invalid, 2 usage error.",
    )
    p.add_argument("path", nargs="?", metavar="PATH",
                   help="the tree holding users/ (default: the config's source root)")
    p.add_argument("--config", metavar="FILE",
                   help="daemon config to judge by: platform, storage_root, allow and deny lists, "
                   "quotas "
                   f"(default: ${config.CONFIG_ENV}, else {config.DEFAULT_CONFIG_PATH} "
                   "if it exists, else built-in GPU defaults)")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text: one line per error; json: one object with every file and "
                   "document (default text)")
    p.set_defaults(func=_cmd_validate)


@_pipe_safe
def _cmd_validate(args: argparse.Namespace) -> int:
    try:
        cfg = config.load(args.config)
    except ConfigError as e:
        return _error(str(e))
    if args.path is None and cfg.source.path is None:
        return _error("no PATH given and the config's source is a git URL")
    root = Path(args.path) if args.path is not None else cfg.source_root
    try:
        state = validating.validate_tree(root, cfg)
    except SourceError as e:
        return _error(str(e))
    state = _with_quotas(state, cfg)
    # the daemon's own refusal (DirectorySource); the files are still checked, so
    # a model file put beside users/ rather than in it is reported too
    problem = loading.users_dir_problem(root)
    tree = () if problem is None else (_tree_issue(problem),)
    if args.format == "json":
        print(json.dumps(_state_json(state, tree), indent=2))
    else:
        for issue in (*tree, *state.issues()):
            print(issue.render())
    sys.stdout.flush()
    print(_summary(state, problem), file=sys.stderr)
    return 0 if state.ok and problem is None else 1


def _with_quotas(state: DesiredState, cfg: config.Config) -> DesiredState:
    """``state`` judged by the config's quotas as the daemon judges it: in the
    admission order of the models recorded in its state dir, read-only (a note
    on stderr when the state file can't be read, e.g. it is the daemon's, 0600:
    quotas are then judged as if nothing were admitted yet)."""
    if not cfg.serving.quotas.active:
        return state
    from servesync.converge.reconciling import admissions
    from servesync.desired import quotas
    from servesync.state.store import StateFileError, read_models

    try:
        records = read_models(Path(cfg.state_dir))
    except StateFileError as e:
        records = []
        print(f"servesync: note: cannot read {e.path} ({e.reason}): quotas are judged as if "
              "no model were admitted yet; `servesync plan` beside the daemon judges them "
              "with its records", file=sys.stderr)
    return quotas.apply(state, admissions(records), cfg.serving.quotas)


def _tree_issue(problem: str) -> Issue:
    """A problem of the whole tree as a 400 issue on the missing ``users/`` folder."""
    return Issue(IssueCode.INVALID, loading.USERS_DIR + "/", 0, "",
                 f"{problem}: the daemon refuses this tree (a wrong path?); "
                 f"model files go under {loading.USERS_DIR}/<user_id>/")


def _state_json(state: DesiredState, tree: tuple[Issue, ...] = ()) -> dict[str, Any]:
    return {
        "ok": state.ok and not tree,
        "revision": state.revision,
        "errors": [{"path": i.file, **i.to_json()} for i in tree],
        "files": [
            {
                "path": f.path,
                "ok": f.ok,
                "errors": [i.to_json() for i in f.issues],
                "documents": [
                    {"index": d.index, "line": d.line,
                     "model_id": None if d.model_id is None else scrub(d.model_id), "ok": d.ok,
                     "errors": [i.to_json() for i in d.issues]}
                    for d in f.documents
                ],
            }
            for f in state.files
        ],
    }


def _summary(state: DesiredState, problem: str | None = None) -> str:
    docs = sum(len(f.documents) for f in state.files)
    bad_files = sum(1 for f in state.files if not f.ok)
    errors = len(state.issues())
    head = "ok" if state.ok and problem is None else "invalid"
    why = "" if problem is None else f" {problem};"
    return (f"{head}:{why} {len(state.files)} files, {docs} documents, "
            f"{len(state.specs)} valid models; {errors} errors in {bad_files} files")


# --- schema -------------------------------------------------------------------------


def _add_schema(sub: Any) -> None:
    p = sub.add_parser(
        "schema",
        help="print one of servesync's JSON Schemas",
        description="Print a JSON Schema (draft 2020-12) as shipped, e.g. for an editor or "
        "a CI check. Names: " + ", ".join(schemas.NAMES) + ".",
    )
    p.add_argument("name", metavar="NAME", help="one of: " + ", ".join(schemas.NAMES))
    p.set_defaults(func=_cmd_schema)


@_pipe_safe
def _cmd_schema(args: argparse.Namespace) -> int:
    if args.name not in schemas.NAMES:
        return _error(f"unknown schema {args.name!r}; choose from {', '.join(schemas.NAMES)}")
    try:
        text = schemas.text(args.name)
    except OSError as e:
        print(f"servesync: error: schema {args.name!r} is not installed: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


# --- once / plan / run: the reconcile tick ------------------------------------------


def _config_arg(p: Any) -> None:
    p.add_argument("--config", metavar="FILE",
                   help=f"daemon config (default: ${config.CONFIG_ENV}, else "
                   f"{config.DEFAULT_CONFIG_PATH} if it exists, else built-in defaults)")


def _add_once(sub: Any) -> None:
    p = sub.add_parser(
        "once", help="run one reconcile tick (exit 0 converged, 1 not)",
        description="Read the desired state, validate it, observe Ray, plan and apply one "
        "tick, write the status files. With --wait, keep ticking until nothing is in "
        "flight or the time is up. Exit 0 converged, 1 not (failed model, invalid file, "
        "still deploying), 2 usage or config error, or another servesync holds the state.",
    )
    _config_arg(p)
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="keep ticking up to SECONDS until converged (default: one tick)")
    p.set_defaults(func=_cmd_once)


def _cmd_once(args: argparse.Namespace) -> int:
    from servesync import wiring

    return _guarded(lambda cfg: wiring.once(cfg, wait_s=args.wait), args.config)


def _add_plan(sub: Any) -> None:
    p = sub.add_parser(
        "plan", help="print the actions a tick would take (exit 0 none, 1 some, 2 error)",
        description="Like `once`, but only prints the plan: one line per action "
        "(create, update, scale, start, retry, redeploy, stop, delete, gateway, record, "
        "forget) with its reason. Changes nothing. Exit 0 nothing to do, 1 changes, "
        "2 error (bad config, Ray unreachable).",
    )
    _config_arg(p)
    p.set_defaults(func=_cmd_plan)


def _cmd_plan(args: argparse.Namespace) -> int:
    from servesync import wiring

    return _guarded(wiring.plan, args.config)


def _add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run", help="run the daemon (systemd: Type=notify)",
        description="Watch the desired-state source and converge Ray Serve LLM: a tick on "
        "every commit (watched) or fetch (remote), and every tick_interval_s for drift. "
        "SIGTERM/SIGINT stop it (models keep serving), SIGHUP reloads the config and "
        "fetches. Exit 0 stopped, 1 crashed, 2 config error or state dir locked.",
    )
    _config_arg(p)
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="one line per event on stderr: text, or JSON for machines")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from servesync import wiring
    from servesync.daemon import loop
    from servesync.daemon.logs import setup_logging
    from servesync.daemon.sdnotify import Notifier
    from servesync.status.notifying import Notifications

    setup_logging(fmt=args.log_format, level=args.log_level.upper())
    try:
        cfg = config.load(args.config)
    except ConfigError as e:
        return _error(str(e))
    hub = Notifications()  # one outbox and delivery threads across reloads
    try:
        return loop.run_daemon(
            cfg, ticker_factory=lambda c: wiring.reconciler(c, lock=False, notifications=hub),
            notifier=Notifier.from_env(),
        )
    finally:
        hub.close()


def _guarded(fn: Any, config_path: str | None) -> int:
    """Load the config and run ``fn(cfg)``; servesync's own errors exit 2 with a message."""
    from servesync.errors import ServesyncError

    try:
        cfg = config.load(config_path)
        code: int = fn(cfg)
    except ServesyncError as e:
        return _error(str(e))
    return code


# --- status -------------------------------------------------------------------------


def _add_status(sub: Any) -> None:
    p = sub.add_parser(
        "status", help="show the models from the status files",
        description="Print the status files' models as a table (id, state, replicas, "
        "revision, error), or index.json with --json. Reads files only; needs no Ray. "
        "With --wait, wait until every enabled model is RUNNING (exit 0) or the time is "
        "up (exit 1).",
    )
    _config_arg(p)
    p.add_argument("--json", action="store_true", help="print index.json as it is")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to SECONDS for every model to be RUNNING or STOPPED")
    p.set_defaults(func=_cmd_status)


@_pipe_safe
def _cmd_status(args: argparse.Namespace) -> int:
    import time

    from servesync.errors import ServesyncError
    from servesync.status import reading

    try:
        status_dir = Path(config.load(args.config).status_dir)
    except ConfigError as e:
        return _error(str(e))
    deadline = time.monotonic() + args.wait
    while True:
        try:
            index = reading.load_index(status_dir)
        except ServesyncError as e:
            index, problem = None, str(e)
        if index is not None and _all_up(index):
            break
        if time.monotonic() >= deadline:
            if index is None:
                return _error(problem)
            break
        time.sleep(1.0)
    if args.json:
        print(json.dumps(index, indent=2))
    else:
        print(reading.render_table(status_dir))
    return 0 if (not args.wait or _all_up(index)) else 1


def _all_up(index: dict[str, Any]) -> bool:
    models = index.get("models") or []
    return bool(models) and all(m.get("state") in ("RUNNING", "STOPPED") for m in models)
