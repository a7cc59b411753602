"""Progress lines at a steady interval when stdout is not a terminal (issue 13.6)."""

from __future__ import annotations

import io
import re
import time
from types import SimpleNamespace

from rich.console import Console

from conrec.progress import StageProgress, progress_interval
from conrec.stages import STAGE_REGISTRY


def _pipe_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=False, width=200), buf


def test_off_terminal_prints_a_line_per_interval_even_without_updates():
    console, buf = _pipe_console()
    with StageProgress(console=console, interval=0.1) as progress:
        task = progress.add_task("SFT", total=10, loss="")
        progress.update(task, completed=3, loss="loss 1.234")
        time.sleep(0.55)  # one long step: no update, lines must still come
    lines = buf.getvalue().splitlines()
    ticks = [ln for ln in lines if ln.startswith("SFT: 3/10 (30%)")]
    assert 3 <= len(ticks) <= 7, lines
    assert "loss 1.234" in ticks[0] and "elapsed" in ticks[0]
    assert lines[-1].startswith("SFT: 3/10")  # the last line on stop
    assert "\x1b[" not in buf.getvalue()  # plain text: no terminal control codes


def test_finished_tasks_stop_printing():
    console, buf = _pipe_console()
    with StageProgress(console=console, interval=0.05) as progress:
        done = progress.add_task("data", total=2)
        progress.update(done, completed=2)
        busy = progress.add_task("sid", total=4)
        progress.update(busy, completed=1)
        time.sleep(0.3)
    out = buf.getvalue().splitlines()
    assert sum(ln.startswith("data:") for ln in out) == 1  # only the final line
    assert sum(ln.startswith("sid: 1/4") for ln in out) >= 3


def _bar_on_a_terminal(monkeypatch, term: str, total: int, completed: int, interval: float, seconds: float) -> tuple[StageProgress, str]:
    """(the progress, what it wrote) for one task held ``seconds`` on a console declared a terminal of type ``term``."""
    monkeypatch.setenv("TERM", term)
    monkeypatch.delenv("TTY_INTERACTIVE", raising=False)
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=80)
    with StageProgress(console=console, interval=interval) as progress:
        progress.add_task("SFT", total=total, completed=completed)
        time.sleep(seconds)
    return progress, buf.getvalue()


def test_on_a_terminal_it_is_rich_progress(monkeypatch):
    progress, out = _bar_on_a_terminal(monkeypatch, "xterm", total=2, completed=1, interval=0.01, seconds=0.1)
    assert progress._thread is None and "\x1b[" in out


def test_sft_callback_prints_lines_off_terminal(monkeypatch):
    from conrec.llm.training.sft import RichProgressCallback

    monkeypatch.setenv("CONREC_PROGRESS_SECONDS", "0.05")
    console, buf = _pipe_console()
    cb = RichProgressCallback(console)
    cb.n_examples = 75
    state = SimpleNamespace(is_world_process_zero=True, max_steps=20, global_step=0)
    args = SimpleNamespace(per_device_train_batch_size=4, gradient_accumulation_steps=2, world_size=1, num_train_epochs=2.0,
                           max_steps=-1)
    cb.on_train_begin(args, state, None)
    for step in range(1, 5):
        state.global_step = step
        cb.on_step_end(args, state, None)
        cb.on_log(args, state, None, logs={"loss": 2.5})
        time.sleep(0.06)
    cb.on_train_end(args, state, None)
    assert len(re.findall(r"^SFT: \d+/20", buf.getvalue(), re.M)) >= 4
    # the plan comes first, before any step (off a terminal the bar's first line waits for its interval)
    assert buf.getvalue().splitlines()[0] == "SFT: 20 steps planned (2 epochs x 75 examples / 8 per step)"


def test_the_last_line_carries_the_last_steps_status(monkeypatch):
    """Off a terminal, a bar's last line is printed as its count completes, at the trainer's ``on_step_end``, before
    the ``on_log`` of that same step: GRPO's last line showed step 1's reward for a 2-step stage, SFT's the loss
    logged before. The final step is now counted once its log is in."""
    from conrec.llm.training.grpo import GrpoLogCallback
    from conrec.llm.training.sft import RichProgressCallback

    monkeypatch.setenv("CONREC_PROGRESS_SECONDS", "3600")  # no timed line: only the last ones
    args = SimpleNamespace(per_device_train_batch_size=4, gradient_accumulation_steps=1, world_size=1, num_train_epochs=1.0, max_steps=2)
    grpo_logs = [{"reward": r, "rewards/hit/mean": 0.5, "frac_reward_zero_std": z} for r, z in ((-0.037, 0.25), (0.225, 0.5))]
    sft_logs = [{"loss": 3.5}, {"loss": 1.25}]
    console, buf = _pipe_console()
    grpo = GrpoLogCallback([], SimpleNamespace(name="neg"), 0, 0, SimpleNamespace(last_invalid_rate=0.0), console, show_progress=True)  # type: ignore[arg-type]
    sft = RichProgressCallback(console)
    for cb, logs in ((grpo, grpo_logs), (sft, sft_logs)):
        state = SimpleNamespace(is_world_process_zero=True, max_steps=2, global_step=0)
        cb.on_train_begin(args, state, None)
        for step, log in enumerate(logs, 1):
            state.global_step = step
            cb.on_step_end(args, state, None)
            cb.on_log(args, state, None, logs=log)
        cb.on_log(args, state, None, logs={"train_runtime": 1.0})  # the trainer's summary
        cb.on_train_end(args, state, None)
    lines = [ln for ln in buf.getvalue().splitlines() if "2/2" in ln]
    assert len(lines) == 2 and "last reward 0.225" in lines[0] and "zero-adv 50%" in lines[0], lines
    assert "last loss 1.250" in lines[1], lines


def test_planned_steps_line() -> None:
    """On 10,000 users the default recipe ran 5,504 SFT steps (hours on 2 cores) with no word before the bar's first
    line; the line is the trainer's own count and where it comes from, with no invented speed."""
    from conrec.llm.training.sft import planned_steps_line

    assert planned_steps_line(5504, 8.0, 10_998, 16, capped=False) == (
        "SFT: 5,504 steps planned (8 epochs x 10,998 examples / 16 per step)")
    assert planned_steps_line(150, 8.0, 10_998, 16, capped=True) == "SFT: 150 steps planned (sft.train.max_steps)"
    assert planned_steps_line(150, 8.0, 10_998, 16, capped=True, done=40).endswith(", resuming at step 40")


def test_interval_setting(monkeypatch):
    monkeypatch.setenv("CONREC_PROGRESS_SECONDS", "7")
    assert progress_interval() == 7.0
    for bad in ("x", "-1", "0"):
        monkeypatch.setenv("CONREC_PROGRESS_SECONDS", bad)
        assert progress_interval() == 30.0


def test_sft_progress_stops_when_training_raises(monkeypatch, tmp_path):
    """A crash mid-training must not leave the line timer printing for the rest of the process."""
    import pytest

    import conrec.llm.training.sft as sft_mod
    from conrec.config import load_config
    from conrec.llm.model.toy import write_toy_run

    write_toy_run(tmp_path, n_items=32, n_users=12)
    cfg = load_config(None, {"run_dir": str(tmp_path), "sft": {"model": {"tiny": {"seed": 3}}, "max_samples": 16,
                                                                "train": {"max_steps": 3, "batch_size": 4}}})
    made: list = []
    real_begin = sft_mod.RichProgressCallback.on_train_begin

    def begin(self, *a, **kw):
        made.append(self)
        return real_begin(self, *a, **kw)

    def crash(self, *a, **kw):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(sft_mod.RichProgressCallback, "on_train_begin", begin)
    monkeypatch.setattr(sft_mod.RichProgressCallback, "on_step_end", crash)
    console, buf = _pipe_console()
    with pytest.raises(RuntimeError):
        STAGE_REGISTRY["sft"].call(cfg, console=console)
    assert made and made[0].progress is None
    assert "SFT: 3 steps planned (sft.train.max_steps)" in buf.getvalue()  # the trainer's arguments, read for real


class _Clock:
    """A settable clock for rich's Progress (``get_time``): the lines are checked without sleeping."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_follow_the_bar_columns_and_recompute_the_time_left():
    """A bar built with remaining=False prints no "left" off-terminal; one with it prints a time left that grows
    through a long step, where rich's estimate stayed at the fast steps' "~0:00:03 left" for ten minutes."""
    from conrec.progress import stage_progress

    for remaining in (False, True):
        console, buf = _pipe_console()
        clock = _Clock()
        progress = stage_progress(console=console, label="{task.description}", remaining=remaining)
        progress.get_time = clock  # rich reads the clock through this attribute
        progress.interval = 3600.0  # no timer line: print_lines is called by hand below
        task = progress.add_task("baselines", total=9)
        for _ in range(3):  # three fast steps of 1 s
            clock.now += 1.0
            progress.advance(task)
        progress.print_lines()
        clock.now += 600.0  # a 10-minute step with no advance
        progress.print_lines()
        lines = buf.getvalue().splitlines()
        assert len(lines) == 2 and all(ln.startswith("baselines: 3/9 (33%)") for ln in lines), lines
        if not remaining:
            assert not any("left" in ln for ln in lines), lines
        else:
            assert lines[0].endswith("0:00:03 elapsed, ~0:00:06 left"), lines
            assert lines[1].endswith("0:10:03 elapsed, ~0:20:06 left"), lines


def test_time_left_after_a_resume_counts_only_this_process_steps():
    """A task added at a resumed step (checkpoint-500 of 2000) paces on the steps done here: 250 steps in 10 s
    leave 1250 steps, 50 s; counting the 500 restored ones too gave "~0:00:16 left" (the run took 52 s more).
    The terminal bar (rich's own estimate, from the advances it saw) says the same."""
    from conrec.progress import stage_progress

    console, buf = _pipe_console()
    clock = _Clock()
    progress = stage_progress(console=console, label="{task.description}")
    progress.get_time = clock
    task = progress.add_task("SFT", total=2000, completed=500)
    for _ in range(10):  # 25 steps a second
        clock.now += 1.0
        progress.advance(task, 25)
    progress.print_lines()
    assert buf.getvalue().strip() == "SFT: 750/2000 (38%), 0:00:10 elapsed, ~0:00:50 left", buf.getvalue()
    live = progress.tasks[0].time_remaining
    assert live is not None and 45 <= live <= 55, live


def test_a_dumb_terminal_gets_the_plain_lines(monkeypatch):
    """TERM=dumb on a pty (Emacs, some CI runners): rich's live bar never redraws there, and the plain lines were
    off too (a terminal), so a 55 s SFT printed nothing until it ended."""
    progress, out = _bar_on_a_terminal(monkeypatch, "dumb", total=10, completed=3, interval=0.05, seconds=0.3)
    lines = out.splitlines()
    assert progress.plain and sum(ln.startswith("SFT: 3/10 (30%)") for ln in lines) >= 3, lines
    assert "\r" not in out


def test_force_color_into_a_pipe_gets_the_plain_lines(monkeypatch):
    """FORCE_COLOR (often set in CI) makes rich call any output a terminal: the live bar wrote ~12 redraws a second
    joined by carriage returns into the log. The file is no terminal: plain lines, no \\r."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm")
    for name in ("TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    buf = io.StringIO()
    console = Console(file=buf, width=80)
    assert console.is_terminal  # rich's view: the reason for the flood
    with StageProgress(console=console, interval=0.05) as progress:
        progress.add_task("SFT", total=10, completed=3)
        time.sleep(0.3)
    out = buf.getvalue()
    assert progress.plain and "\r" not in out and out.splitlines()[0].startswith("SFT: 3/10 (30%)"), out


def test_a_finished_task_line_has_its_own_time_and_comes_when_it_finishes():
    """In a group (sid: encoding, then the quantizer) a finished task's line kept counting until the group stopped
    ('encoding items: 4/4 (100%), 0:00:03 elapsed', the quantizer's 3 s added) and came after the later task's."""
    from conrec.progress import stage_progress

    console, buf = _pipe_console()
    clock = _Clock()
    progress = stage_progress(console=console, label="{task.description}", remaining=False)
    progress.get_time = clock
    progress.interval = 3600.0  # no timer line
    with progress:
        first = progress.add_task("encoding items", total=4)
        clock.now += 1.0
        progress.advance(first, 4)
        later = progress.add_task("RQ-VAE training", total=2)
        clock.now += 2.0
        progress.advance(later, 1)
        progress.print_lines()  # a timer line
        clock.now += 1.0
        progress.advance(later, 1)
    assert buf.getvalue().splitlines() == [
        "encoding items: 4/4 (100%), 0:00:01 elapsed",
        "RQ-VAE training: 1/2 (50%), 0:00:02 elapsed",
        "RQ-VAE training: 2/2 (100%), 0:00:03 elapsed",
    ], buf.getvalue()
