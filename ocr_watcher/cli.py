"""The `ocr-watcher` command. Every subcommand but `run` is a client of the folder protocol."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from .cli_common import EXIT_JOB_FAILED, EXIT_OK, EXIT_USAGE, UsageError, summary_line, wait_for
from .config import EX_CONFIG, Config, ConfigError, load_config
from .log_setup import setup_logging
from .spool.atomic import fsync_dir
from .spool.layout import CANCEL, RESULT_FORMATS, RETRY
from .spool.model import RETRYABLE, TERMINAL, Status
from .spool.store import AmbiguousJob, JobNotFound, JobStore


# -- helpers ---------------------------------------------------------------------------------------
def _config(args: argparse.Namespace, **overrides: Any) -> Config:
    given = {key: value for key, value in overrides.items() if value is not None}
    return load_config(args.config, overrides=given)


def _store(args: argparse.Namespace) -> JobStore:
    config = _config(args)
    return JobStore(config.outbox, fsync=config.jobs.fsync)


def _resolve(store: JobStore, prefix: str) -> str:
    try:
        return store.resolve(prefix)
    except (JobNotFound, AmbiguousJob) as exc:
        raise UsageError(str(exc)) from exc


def cmd_run(args: argparse.Namespace) -> int:
    from .service import Service, StartupError, install_signal_handlers
    from .wiring import build_hooks

    overrides: dict[str, Any] = {
        "inbox": args.inbox,
        "outbox": args.outbox,
        "engine": args.engine,
        "worker_id": args.worker_id,
    }
    if args.settle is not None:
        overrides["intake"] = {"settle_seconds": args.settle}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    config = _config(args, **overrides)
    setup_logging(config.log_level)
    try:
        service = Service(config, args.config, hooks=build_hooks(config), overrides=overrides)
        install_signal_handlers(service)
        return service.run()
    except StartupError as exc:
        logging.getLogger("ocr_watcher").error("cannot start: %s", exc)
        return EX_CONFIG


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _config(args)
    print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
    print(f"# configuration OK; worker_id resolves to {config.resolved_worker_id!r}", file=sys.stderr)
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import examine, format_report

    report = examine(_config(args), args.profile)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return EXIT_OK if report["ok"] else EXIT_JOB_FAILED


def _unique_destination(folder: Path, name: str) -> Path:
    candidate = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    counter = 1
    while candidate.exists():
        counter += 1
        candidate = folder / f"{stem} ({counter}){suffix}"
    return candidate


def _publish_without_clobbering(tmp: Path, folder: Path, name: str) -> Path:
    """Give the finished copy its real name; never replace a file already there."""
    while True:
        destination = _unique_destination(folder, name)
        try:
            os.link(tmp, destination)  # fails if the name was taken meanwhile
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            os.rename(tmp, destination)  # shares without hard links: a rename, after the check above
            return destination
        tmp.unlink()
        return destination


def submit_file(config: Config, source: Path, profile: str | None) -> Path:
    """Copy into the inbox under a hidden temporary name, then rename: the daemon never sees half a file."""
    folder = config.inbox / profile if profile else config.inbox
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{source.name}.ocr-watcher-upload-{os.getpid()}"
    try:
        with open(source, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        destination = _publish_without_clobbering(tmp, folder, source.name)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(folder)
    return destination


def _find_job_for(store: JobStore, inbox_path: str, size: int, since: float) -> str | None:
    for job_id in store.iter_job_ids():
        meta = store.try_load(job_id)
        if (
            meta is not None
            and meta.source.inbox_path == inbox_path
            and meta.source.size == size
            and meta.created_at.timestamp() >= since - 2
        ):
            return job_id
    return None


def cmd_submit(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.profile and args.profile not in config.profiles:
        print(f"note: profile {args.profile!r} is not in the config; the default profile applies", file=sys.stderr)
    submitted: list[tuple[str, int]] = []
    started = time.time()
    for name in args.files:
        source = Path(name)
        if not source.is_file():
            raise UsageError(f"{source} is not a file")
        destination = submit_file(config, source, args.profile)
        rel = destination.relative_to(config.inbox).as_posix()
        submitted.append((rel, destination.stat().st_size))
        print(f"submitted {source} as {destination}")
    if not args.wait:
        return EXIT_OK
    store = JobStore(config.outbox)
    job_ids: list[str] = []
    for rel, size in submitted:
        job_id = None
        while job_id is None:
            job_id = _find_job_for(store, rel, size, started)
            if job_id is None:
                time.sleep(0.5)
        print(f"{rel}: job {job_id}")
        job_ids.append(job_id)
    return wait_for(store, job_ids, timeout=args.timeout)


def cmd_jobs(args: argparse.Namespace) -> int:
    from .job_list import print_jobs

    print_jobs(_store(args), args.status, args.limit, args.json)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    store = _store(args)
    meta = store.load(_resolve(store, args.job))
    if args.json:
        print(json.dumps(meta.to_json(), indent=2, ensure_ascii=False))
        return EXIT_OK
    print(summary_line(meta))
    print(f"  source   {meta.source.inbox_path} ({meta.source.size} bytes)")
    print(f"  profile  {meta.profile} (priority {meta.priority}), engine {meta.engine.kind if meta.engine else '-'}")
    print(f"  created  {meta.created_at.isoformat()}  finished {meta.finished_at or '-'}")
    print(f"  worker   {meta.worker.id} (pid {meta.worker.pid}), attempts {meta.attempts}")
    if not meta.status.terminal:
        from .job_list import queue_line

        print(f"  queue    {queue_line(store, meta)}")
    if meta.status is Status.COMPLETED:
        shared = f" (job {meta.duplicate_of}'s, of the same content)" if meta.duplicate_of else ""
        print(f"  result   {store.paths(meta.job_id).result_md}{shared}")
    return EXIT_OK


def cmd_wait(args: argparse.Namespace) -> int:
    store = _store(args)
    return wait_for(store, [_resolve(store, job) for job in args.jobs], timeout=args.timeout)


def cmd_download(args: argparse.Namespace) -> int:
    """A completed job's result file (by format) to a file, into a folder, or to standard output."""
    store = _store(args)
    meta = store.load(_resolve(store, args.job))
    name, suffix = RESULT_FORMATS[args.format]
    if meta.status is not Status.COMPLETED:
        raise UsageError(f"{meta.job_id} is {meta.status.value}: its {name} is written once it completes")
    source = store.paths(meta.job_id).dir / name
    if not source.is_file():
        raise UsageError(f"{meta.job_id} has no {name} (its profile's outputs do not include {args.format})")
    if args.output is None:
        with source.open("rb") as fh:
            shutil.copyfileobj(fh, sys.stdout.buffer)
        return EXIT_OK
    target = args.output / (Path(meta.source.name).stem + suffix) if args.output.is_dir() else args.output
    shutil.copyfile(source, target)
    print(f"{target}", file=sys.stderr)
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    store = _store(args)
    job_id = _resolve(store, args.job)
    meta = store.load(job_id)
    if meta.status in TERMINAL:
        print(f"{job_id} is already {meta.status.value}", file=sys.stderr)
        return EXIT_OK
    store.request(job_id, CANCEL)
    print(f"cancel requested for {job_id}")
    return EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    store = _store(args)
    job_id = _resolve(store, args.job)
    meta = store.load(job_id)
    if meta.status not in RETRYABLE:
        raise UsageError(f"{job_id} is {meta.status.value}; only failed or cancelled jobs can be retried")
    store.request(job_id, RETRY)
    print(f"retry requested for {job_id}")
    return EXIT_OK


def cmd_purge(args: argparse.Namespace) -> int:
    from .retention.policy import Limits, describe, human_bytes
    from .retention.sweeper import Retention
    from .spool.model import utc_now

    config = _config(args)
    store = JobStore(config.outbox, fsync=config.jobs.fsync)
    retention = Retention(store, lease_grace_seconds=config.jobs.heartbeat_lease_seconds)
    now = utc_now()
    result = retention.run_pass(Limits.from_config(config.retention), now, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for deletion in result.deletions:
        print(f"{verb} {deletion.job_id}: {describe(deletion, result.jobs.get(deletion.job_id), now)}")
    for job_id, why in result.skipped:
        print(f"kept {job_id}: {why}")
    if result.trash_removed:
        print(f"removed {result.trash_removed} leftovers of interrupted deletions")
    remain = "would remain" if args.dry_run else "remain"
    print(
        f"{verb} {len(result.deletions)} jobs ({human_bytes(result.deleted_bytes)});"
        f" {result.job_count} jobs ({human_bytes(result.total_bytes)}) {remain} in {store.root}"
    )
    return EXIT_OK


# -- parser ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ocr-watcher", description="Watch-folder OCR: inbox -> Markdown.")
    parser.add_argument("--version", action="version", version=f"ocr-watcher {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="YAML config file (default: $OCR_WATCHER_CONFIG, else built-in)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="run the daemon")
    run.add_argument("--inbox", help="folder to watch")
    run.add_argument("--outbox", help="folder for job folders")
    run.add_argument("--engine", choices=["auto", "hybrid", "vllm", "tesseract", "text"])
    run.add_argument("--settle", type=float, metavar="SECONDS", help="seconds a file must stay unchanged")
    run.add_argument("--worker-id", help="this daemon's identity (default: host name)")
    run.set_defaults(func=cmd_run)

    submit = sub.add_parser("submit", parents=[common], help="copy files into the inbox safely")
    submit.add_argument("files", nargs="+", metavar="FILE")
    submit.add_argument("--profile", help="inbox subfolder (profile) to submit into")
    submit.add_argument("--wait", action="store_true", help="wait for the jobs to finish")
    submit.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    submit.set_defaults(func=cmd_submit)

    jobs = sub.add_parser("jobs", parents=[common], help="list jobs, newest first")
    jobs.add_argument("--status", choices=[s.value for s in Status])
    jobs.add_argument("--json", action="store_true", help="every job as JSON (with --limit, the newest N)")
    jobs.add_argument("--limit", type=int, metavar="N", help="the newest N (default 50 in the table; 0 = all)")
    jobs.set_defaults(func=cmd_jobs)

    status = sub.add_parser("status", parents=[common], help="show one job")
    status.add_argument("job", metavar="JOB", help="job id or a unique prefix of it")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    wait = sub.add_parser("wait", parents=[common], help="wait for jobs to finish (exit 1 if any did not complete)")
    wait.add_argument("jobs", nargs="+", metavar="JOB")
    wait.add_argument("--timeout", type=float)
    wait.set_defaults(func=cmd_wait)

    download = sub.add_parser("download", parents=[common], help="copy a completed job's result file")
    download.add_argument("job", metavar="JOB")
    download.add_argument("--format", choices=sorted(RESULT_FORMATS), default="markdown")
    download.add_argument("-o", "--output", type=Path, help="a file, or a folder (named after the source)")
    download.set_defaults(func=cmd_download)

    for name, func, text in (("cancel", cmd_cancel, "cancel a job"), ("retry", cmd_retry, "retry a failed job")):
        command = sub.add_parser(name, parents=[common], help=text)
        command.add_argument("job", metavar="JOB")
        command.set_defaults(func=func)

    purge = sub.add_parser("purge", parents=[common], help="apply the retention limits now")
    purge.add_argument("--dry-run", action="store_true", help="only show what would be deleted, and why")
    purge.set_defaults(func=cmd_purge)

    check = sub.add_parser("check-config", parents=[common], help="validate and print the configuration")
    check.set_defaults(func=cmd_check_config)

    doctor = sub.add_parser("doctor", parents=[common], help="check that the engine reads a page of known text")
    doctor.add_argument("--profile", default="default", help="the profile whose engine to check")
    doctor.add_argument("--json", action="store_true")
    doctor.set_defaults(func=cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"ocr-watcher: {exc}", file=sys.stderr)
        return EX_CONFIG
    except (UsageError, JobNotFound, AmbiguousJob) as exc:
        print(f"ocr-watcher: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
