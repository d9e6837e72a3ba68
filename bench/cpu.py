"""CPU per delivery, by thread, in a scenario of the real stack (bench/delivery.py).

    python bench/cpu.py --events 20000                       (scenario 1b, the drain)
    python bench/cpu.py --scenario fanout500 --events 5000   (scenario 9, the fan-out)

Runs `bench/delivery.py --only SCENARIO --events N` and reads every thread's CPU time from /proc five times
a second: the Celery pool processes' main threads (the pump: claims, outcomes) and their other threads (the
aiohttp sender), the PostgreSQL backends of the benchmark database, gunicorn's workers (publishing), nginx,
and the benchmark itself (its requests, and in the fan-out the bare client). It reports each one's CPU over
the scenario's busy window (while the workers use more than half a core), divided by the deliveries, beside
the rate. The PostgreSQL figure includes the benchmark's own release of the backlog in the drain (one UPDATE
of N rows). Linux only. The figures are milliseconds per delivery: less noisy than a rate on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
BENCH_BACKEND = "postgres: 15/main: postgres asiri_bench"  # bench/delivery.py's DB_NAME


def kind(command: str) -> str | None:
    if "celery" in command and "worker" in command:
        return "pump"
    if BENCH_BACKEND.split(": ", 1)[1] in command and command.startswith("postgres:"):
        return "postgresql"
    if command.startswith("nginx"):
        return "nginx"
    if "gunicorn" in command and "asiri.wsgi" in command:
        return "web"
    if "bench/delivery.py" in command:
        return "bench"
    return None


def sample() -> dict[tuple[str, str, str], float]:
    """CPU seconds so far of every thread of interest, keyed (kind, pid, tid)."""
    seconds = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        what = kind(command)
        if what is None:
            continue
        for tid in threads:
            try:
                fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            name = "sender" if what == "pump" and tid != pid else what
            seconds[(name, pid, tid)] = (int(fields[11]) + int(fields[12])) / TICKS
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--scenario", choices=("drain", "fanout500"), default="drain")
    args = parser.parse_args()
    bench = subprocess.Popen(
        [sys.executable, "bench/delivery.py", "--only", args.scenario, "--events", str(args.events)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    samples = []
    while bench.poll() is None:
        samples.append((time.monotonic(), sample()))
        time.sleep(0.2)
    output = bench.stdout.read()
    rate = re.search(r"(\d+) deliveries/s", output)
    if bench.returncode or rate is None:
        raise SystemExit(f"the benchmark failed:\n{output[-2000:]}")

    def pumps(at: dict) -> float:
        return sum(v for k, v in at.items() if k[0] in ("pump", "sender"))

    busy = [
        n
        for n in range(1, len(samples))
        if (pumps(samples[n][1]) - pumps(samples[n - 1][1])) / (samples[n][0] - samples[n - 1][0]) > 0.5
    ]
    if not busy:
        raise SystemExit("no drain seen: the workers never used half a core")
    # The scenario is the last busy stretch (pauses under a second allowed): the workers' own start, which
    # also uses more than half a core, comes before it with the benchmark's setup in between.
    first = len(busy) - 1
    while first > 0 and busy[first] - busy[first - 1] <= 5:
        first -= 1
    busy = busy[first:]
    before = samples[busy[0] - 1][1]
    # Each thread's last reading in the window: a PostgreSQL backend (or a pool process) that ends before
    # the drain does keeps what it used. Reading only the window's last sample dropped them, so the
    # PostgreSQL figure came out at a third of itself in some runs and whole in others.
    last: dict[tuple[str, str, str], float] = {}
    for _, at in samples[busy[0] : busy[-1] + 1]:
        last.update(at)
    used: dict[str, float] = {}
    for key, seconds in last.items():
        used[key[0]] = used.get(key[0], 0.0) + seconds - before.get(key, 0.0)
    per_delivery = {name: seconds / args.events * 1000 for name, seconds in sorted(used.items())}
    ratio = re.search(r"ratio ours/baseline: ([\d.]+)", output)
    print(
        f"{rate.group(1)} deliveries/s{f' (ratio {ratio.group(1)})' if ratio else ''}; CPU per delivery (ms): "
        + ", ".join(f"{name} {ms:.3f}" for name, ms in per_delivery.items())
        + f"; in all {sum(per_delivery.values()):.3f}"
    )


if __name__ == "__main__":
    main()
