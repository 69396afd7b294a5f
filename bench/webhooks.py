"""Webhooks must never slow OCR: throughput with a slow receiver against none, in the same run.

    .venv/bin/python bench/webhooks.py [--quick] [--jobs N] [--reps R] [--delay S]

Per round, alternating (so that drift of the machine hits both alike): N one-page born-digital PDFs
(engine `text`, the overhead bench's setup) dropped at once into a fresh daemon without webhooks, then
into one whose default profile has a webhook to a local receiver that waits S seconds before each
answer (tests/receiver.py). Measured per run: jobs/s (N / (last finished_at - first drop)), and for
the webhook runs the seconds from the last job's end until its delivery was accepted. Reported: the
median of R rounds of each and their ratio; "within noise" is judged against the spread of the
no-webhook runs themselves.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Bench, median, merge, print_figures  # noqa: E402
from overhead import one_run  # noqa: E402

from tests.receiver import Receiver  # noqa: E402

NAME = "webhooks"
QUEUED = 16


def hooked(receiver: Receiver) -> dict:
    hook = {"url": receiver.url, "secret": "bench-secret-0123456789", "timeout_seconds": 30}
    return {"profiles": {"default": {"webhooks": [hook]}}}


def webhook_run(n: int, timeout: float, delay: float, extra: dict) -> dict:
    receiver = Receiver(delay=delay).start()

    def deliveries(daemon: object) -> dict:
        ended = time.time()  # (called once the last job is in the outbox)
        deadline = ended + max(120.0, 2 * n * delay)
        while len(receiver.accepted_ids()) < n and time.time() < deadline:
            time.sleep(0.05)
        return {"delivered": len(receiver.accepted_ids()), "deliveries_lag_s": time.time() - ended}

    try:
        return one_run(n, QUEUED, timeout, merge(extra, hooked(receiver)), after=deliveries)
    finally:
        receiver.stop()


def main() -> int:
    bench = Bench(NAME, __doc__, quick="100 jobs, 2 rounds", sets=True)
    bench.sized("--jobs", int, 300, 100, "jobs per run")
    bench.sized("--reps", int, 5, 2, "rounds (one run of each kind per round)")
    bench.add("--delay", type=float, default=1.0, help="seconds the receiver waits before each answer (1.0)")
    args = bench.parse()
    n, reps, extra = args.jobs, args.reps, args.extra
    timeout = max(60.0, n * 0.5)

    plain, hooked_runs = [], []
    for index in range(reps):
        plain.append(one_run(n, QUEUED, timeout, extra))
        hooked_runs.append(webhook_run(n, timeout, args.delay, extra))
        last, hook = plain[-1], hooked_runs[-1]
        print(
            f"  round {index + 1}/{reps}: none {last['jobs_per_second']:.1f} jobs/s, "
            f"slow receiver {hook['jobs_per_second']:.1f} jobs/s "
            f"({hook['delivered']}/{n} delivered, {hook['deliveries_lag_s']:.1f} s after the last job)",
            flush=True,
        )
    none_rates = [r["jobs_per_second"] for r in plain]
    hook_rates = [r["jobs_per_second"] for r in hooked_runs]
    none_med, hook_med = median(none_rates), median(hook_rates)
    spread = (max(none_rates) - min(none_rates)) / none_med
    rows = [
        ["none", none_med, 1.0, min(none_rates), max(none_rates), "", ""],
        [
            f"receiver {args.delay:g} s",
            hook_med,
            hook_med / none_med,
            min(hook_rates),
            max(hook_rates),
            min(r["delivered"] for r in hooked_runs),
            median([r["deliveries_lag_s"] for r in hooked_runs]),
        ],
    ]
    print_figures(
        f"webhooks: engine text, {n} one-page PDFs dropped at once, max_queued_jobs {QUEUED}, median of {reps}",
        ["webhook", "jobs/s", "vs none", "min", "max", "delivered (min)", "lag after last job s"],
        rows,
    )
    verdict = "within" if abs(hook_med / none_med - 1) <= max(spread, 0.05) else "outside"
    print(f"no-webhook runs spread {spread:.0%} of their median: the webhook runs are {verdict} that noise")
    return bench.finish(
        {
            "quick": args.quick,
            "jobs": n,
            "rounds": reps,
            "receiver_delay_seconds": args.delay,
            "none": plain,
            "webhook": hooked_runs,
            "ratio": hook_med / none_med,
            "noise": spread,
        }
    )


if __name__ == "__main__":
    sys.exit(main())
