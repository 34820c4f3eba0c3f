"""Training you can watch: the CLI's view of `difflab.train`'s records. A start-up summary, a
progress bar in the unit that will end the run (steps, or seconds when train.max_seconds comes
first), a line per checkpoint and per progress grid, and a last line saying why training stopped.
A first Ctrl-C stops after the current step with a checkpoint; a second stops at once."""

from __future__ import annotations

import signal
import sys
import threading

from tqdm import tqdm

BAR = "{desc}: {percentage:3.0f}%|{bar}| {postfix[0]}"  # postfix[0]: set by Watcher.progress
SMOOTHING = 0.98  # the displayed loss: an exponential moving average over ~50 steps


def duration(seconds: float) -> str:
    """12s, 4m05s, 1h02m."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, s = divmod(int(round(seconds)), 60)
    return f"{minutes}m{s:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def summary_lines(record: dict) -> list[str]:
    """The start-up summary of an {"event": "start"} record (training.summary.run_summary)."""
    d, m = record["data"], record["model"]
    if d["kind"] == "points":
        data = f"{d['n']:,} points of {d['shape'][0]} dims"
    else:
        h, w = d["shape"][1:]
        data = (f"{d['n']:,} images, {h}×{w}, {d['channels']} channel"
                f"{'s' if d['channels'] != 1 else ''}")  # fmt: skip
        if d["kind"] == "latents":
            data += " (as cached latents)"
    if d["classes"]:
        names = d["class_names"][:4]
        more = ", …" if d["classes"] > len(names) else ""
        data += f", {d['classes']} classes" + (f" ({', '.join(names)}{more})" if names else "")
    else:
        data += ", no classes"
    if d["held_out"]:
        data += f", {d['held_out']:,} held out"
    model = (f"{m['net']}, {m['parameters']:,} parameters; {m['parameterization']} "
             f"preconditioning, {m['schedule']} schedule (σ {m['sigma_min']:.3g} to "
             f"{m['sigma_max']:.3g}), {m['loss']} loss, {m['sigma_density']} σ density"
             )  # fmt: skip
    if m["cond"] != "none":
        model += f", {m['cond']}-conditional"
    if m["codec"] != "identity":
        model += f", codec {m['codec']}"
    ranks = f" × {record['world_size']} processes" if record["world_size"] > 1 else ""
    threads = record["threads"]
    plural = "s" if threads != 1 else ""
    device = f"{record['device']}{ranks}, {threads} thread{plural}, {record['dtype']}"
    batch = record["batch_size"] * record["world_size"]
    acc = f" × {record['accumulate']} accumulated" if record["accumulate"] > 1 else ""
    steps = record["steps"]
    budget = f"{steps:,} step{'s' if steps != 1 else ''} of batch {batch}{acc}"
    if record["max_seconds"]:
        budget += (f", or train.max_seconds = {record['max_seconds']:g} "
                   f"({duration(record['max_seconds'])} of training) if that comes first"
                   )  # fmt: skip
    every = record["ckpt_every"]
    budget += f"; a checkpoint every {every:,} steps" if 0 < every < steps else \
        "; a checkpoint at the end"
    run = record["run"]
    if record["resumed_from"]:
        run += (f" (resumed from step {record['resumed_step']:,}, "
                f"{duration(record['resumed_seconds'])} trained before)")  # fmt: skip
    rows = [("data", f"{d['name']}: {data}"), ("model", model), ("device", device),
            ("budget", budget), ("run", run)]  # fmt: skip
    return [f"{key:<7} {value}" for key, value in rows]


def stop_line(record: dict) -> str:
    """Why training stopped, from the {"event": "stop"} record (training.loop.stop_record)."""
    step, steps, reason = record["step"], record["steps"], record["reason"]
    took = f"{duration(record['seconds'])} of training"
    last = (f"the last checkpoint is {record['checkpoint']}" if record["checkpoint"]
            else "no checkpoint was written")  # fmt: skip
    saved = f"checkpoint {record['checkpoint']}"
    if reason == "steps":
        if not record["saved"]:
            return (f"stopped: train.steps = {steps:,} was already reached; nothing to do "
                    "(raise train.steps to train on)")  # fmt: skip
        return f"stopped: train.steps = {steps:,} reached ({took}); {saved}"
    if reason == "max_seconds":
        limit = f"train.max_seconds = {record['max_seconds']:g} reached"
        more = ("; to train on, raise train.max_seconds (it counts training time over all "
                "resumes) and run again with --resume")  # fmt: skip
        if not record["saved"]:
            return f"stopped: {limit} before this run's first step; {last}{more}"
        return f"stopped: {limit} at step {step:,} of {steps:,} ({took}); {saved}{more}"
    if reason == "interrupted":
        if record["saved"]:
            return (f"stopped: interrupted (Ctrl-C) at step {step:,} of {steps:,} ({took}); "
                    f"{saved}; continue with --resume")  # fmt: skip
        return f"stopped: interrupted (Ctrl-C) at step {step:,}, not saved; {last}"
    if reason == "nonfinite":
        return f"stopped: non-finite loss or gradient in step {step + 1:,}; {last}"
    return f"stopped at step {step:,} by the error below; {last}"


class GracefulStop:
    """SIGINT once: ask training to stop after the current step (with a checkpoint); twice:
    KeyboardInterrupt at once. Call it to ask whether a stop was requested."""

    def __init__(self):
        self.requested, self.previous = False, None

    def __call__(self) -> bool:
        return self.requested

    def arm(self) -> None:
        if threading.current_thread() is threading.main_thread() and self.previous is None:
            self.previous = signal.signal(signal.SIGINT, self._on_sigint)

    def disarm(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    def _on_sigint(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write("Ctrl-C: stopping after this step with a checkpoint (Ctrl-C again: stop at "
                   "once, without one)", file=sys.stderr)  # fmt: skip


class Watcher:
    """The callback of `difflab.train` for the CLI: prints notes, the summary, checkpoint and
    grid lines and the stop line to stderr above a progress bar (quiet: notes and the stop line
    only, no bar)."""

    def __init__(self, quiet: bool = False, desc: str = "train"):
        self.quiet, self.desc = quiet, desc
        self.stop = GracefulStop()
        self.bar = None
        self.loss, self.k = 0.0, 0  # the smoothed loss and the steps it has seen
        self.first: tuple[int, float] | None = None  # (step, seconds) at this run's start
        self.steps, self.max_seconds = 0, 0.0

    def __call__(self, record: dict) -> None:
        event = record.get("event")
        if "note" in record:
            self.write(record["note"])
        elif event == "start":
            self.start(record)
        elif event == "checkpoint":
            if not self.quiet:
                self.write(f"step {record['step']:,}: checkpoint {record['path']} "
                           f"(loss {self.smoothed(record['logged_loss']):.4g})")  # fmt: skip
        elif event == "progress":
            if not self.quiet:
                self.write(f"step {record['step']:,}: wrote {', '.join(record['files'])}")
        elif event == "stop":
            self.close()
            if record["reason"] != "error":  # an error's own message names the last checkpoint
                self.write(stop_line(record))
        elif "step" in record and "loss" in record:
            self.on_step(record)

    def write(self, text: str) -> None:
        tqdm.write(text, file=sys.stderr)

    def start(self, record: dict) -> None:
        self.stop.arm()  # from the first step on, Ctrl-C stops with a checkpoint (every rank)
        if record["rank"] != 0:
            return
        self.steps, self.max_seconds = record["steps"], record["max_seconds"]
        self.first = (record["resumed_step"], record["resumed_seconds"])
        if not self.quiet:
            for line in summary_lines(record):
                self.write(line)
            self.bar = tqdm(total=self.steps, desc=self.desc, dynamic_ncols=True, leave=False,
                            postfix=[""], bar_format=BAR)  # fmt: skip

    def smoothed(self, fallback: float) -> float:
        return self.loss / (1 - SMOOTHING**self.k) if self.k else fallback

    def on_step(self, record: dict) -> None:
        if record["loss"] == record["loss"]:  # skip NaN (a skipped update)
            self.loss = SMOOTHING * self.loss + (1 - SMOOTHING) * record["loss"]
            self.k += 1
        if self.bar is None or self.first is None:
            return
        step, seconds = record["step"], record["seconds"]
        total, n, text = self.progress(step, seconds)
        self.bar.total, self.bar.n = total, min(n, total)
        self.bar.postfix[0] = f"{text}, loss {self.smoothed(record['loss']):.4f}"
        self.bar.refresh()

    def progress(self, step: int, seconds: float) -> tuple[float, float, str]:
        """(bar total, bar position, text) in the unit that will end the run: steps, or seconds
        when train.max_seconds is projected to come first at this run's pace."""
        step0, seconds0 = self.first
        rate = (step - step0) / max(seconds - seconds0, 1e-9)  # steps per second
        left = (self.steps - step) / rate if rate > 0 else float("inf")
        if self.max_seconds and seconds + left > self.max_seconds:
            remaining = duration(self.max_seconds - seconds)
            return (self.max_seconds, seconds,
                    f"{duration(seconds)} of {duration(self.max_seconds)} budget "
                    "(train.max_seconds), "
                    f"{remaining} left, step {step:,} of {self.steps:,}")  # fmt: skip
        eta = f"ETA {duration(left)}" if rate > 0 else "ETA ?"
        return self.steps, step, f"{step:,}/{self.steps:,} steps, {rate:.3g} steps/s, {eta}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.stop.disarm()
