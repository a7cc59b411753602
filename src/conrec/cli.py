"""The ``conrec`` command: one Typer app, one subcommand per stage.

Every stage command takes ``--config file.yaml`` (a :class:`conrec.config.PipelineConfig`; each
stage uses its own section) and ``--run-dir`` to override where files go. Heavy libraries are
imported inside the commands so ``conrec --help`` stays instant.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from conrec.console_text import error_console, stage_console
from conrec.errors import ConfigError, ConrecError, write_error_line
from conrec.slate import LM_SCORE

# Offline by design: nothing may download weights or data at run time. Set here, for the CLI's process and its
# children (a launched stage, server workers), and only where the user has not set them; a library caller is not
# switched: its loads read local directories with local_files_only=True (conrec.llm.model.backbone, sid.encoder).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# no plain tqdm bar in a CLI process (transformers' GGUF conversion on a pretrained backbone's first load drew one
# into logs; its disable_progress_bar() does not reach it). tqdm reads this when imported, which is later; set
# here, not in conrec.runtime, so that a library user's process and its children keep their bars
os.environ.setdefault("TQDM_DISABLE", "1")

class _Commands(TyperGroup):
    """The app's group: it keeps the subcommand's own arguments for the callback (:func:`_one_process_unless_training`),
    which click runs before the subcommand parses them (its ``--help`` included)."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:  # Any: typer's own (vendored) click types
        name, command, rest = super().resolve_command(ctx, args)
        ctx.meta[_SUBCOMMAND_ARGS] = list(rest)
        return name, command, rest


_SUBCOMMAND_ARGS = "conrec.subcommand_args"
RUNLESS_COMMANDS = frozenset({"config"})
"""Commands that read and write no run (``config`` prints the effective configuration): allowed under a launcher."""

app = typer.Typer(
    cls=_Commands,
    help="conrec: learn what each user dislikes (CoNRec: semantic IDs + SFT + progressive GRPO).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = stage_console()  # off a terminal, one message stays one line in a log
err_console = error_console()  # errors and the Ctrl-C line

ConfigOpt = typer.Option(None, "--config", "-c", help="pipeline YAML: a file or preset:demo / preset:full / preset:tiny / preset:smollm2 / preset:gemma3 (default: the run dir's config.yaml if any)", exists=False)
RunDirOpt = typer.Option(None, "--run-dir", "-r", help="override run_dir from the config")
# Typer renders help with rich markup, which would swallow "[item ids]": escape it.
HISTORY_HELP = escape(
    'JSON file: {"negative": [item ids], "positive": [item ids]} (oldest first; "neg"/"pos" accepted) '
    'or {"history": [{"item_id": ..., "feedback": -1 or 1}, ...]}, or {"user_id": ...} of the run\'s events; a whole '
    'POST /v1/dislikes body is read as the server reads it ("k" unless --k is given; without either decode.top_k, where '
    'the server uses serve.default_k; "explain" or --explain); '
    "see examples/history.json"
)


DEMO_UNDER_A_LAUNCHER = (
    ", or launch only those two: `conrec data` and `conrec sid` first, then sft and grpo under the launcher, then "
    "`conrec eval`"
)


@app.callback()
def _one_process_unless_training(ctx: typer.Context) -> None:
    # no docstring: a callback's would replace the app's help
    # Every command but sft and grpo runs in one process. Under torchrun or `accelerate launch` each process ran it:
    # `demo` and `eval` wrote the run directory from every process at once (a worker rank skips the run lock). Refused
    # before anything is read or written, said by the main process (the launcher stops the others), exit 2 in each.
    # Only under the launchers themselves (their own variables: WORLD_SIZE with RANK is also what SLURM or Kubeflow
    # export for every command of a job), and not for `--help` or a command that touches no run.
    from conrec.run_lock import launcher_world_size

    if launcher_world_size() <= 1:
        return
    from conrec.pipeline import say_error
    from conrec.run_lock import LaunchedError, refuse_under_launcher
    from conrec.stages import DISTRIBUTED_STAGES

    command = ctx.invoked_subcommand
    if command in DISTRIBUTED_STAGES or command in RUNLESS_COMMANDS:  # `conrec sft`, `conrec grpo`: the stage of the same name
        return
    if "--help" in ctx.meta.get(_SUBCOMMAND_ARGS, ()):  # the subcommand parses it later, and only prints its help
        return
    try:
        refuse_under_launcher(f"conrec {command}", then=DEMO_UNDER_A_LAUNCHER if command == "demo" else "")
    except LaunchedError as exc:
        say_error(str(exc))
        raise typer.Exit(2) from None


def _load(config: Path | None, run_dir: Path | None, default_preset: str | None = None, check_record: bool = True):
    """--config, else the run dir's own config.yaml, else ``default_preset``, else defaults. ``check_record``:
    refuse a run's record that names another run (:func:`_check_run_record`); off where nothing is read or written."""
    from conrec.config import load_config, resolve_config_path

    extra: dict[str, Any] = {}
    if run_dir is not None:
        extra["run_dir"] = str(run_dir)
    path = resolve_config_path(config, run_dir, default_preset)
    cfg = load_config(path, extra)
    if check_record and config is not None and run_dir is None:
        _check_run_record(Path(config), cfg.run_dir)
    if path is not None and path.parent.resolve() == Path(cfg.run_dir).resolve():  # the run's own record
        cfg = _open_run_record(cfg, path)
    return cfg


_FROM_RECORD: dict[str, str] = {}
"""Input paths a run's config.yaml names that do not exist, with what to say about them: :func:`_guard` adds it to an
error that names the path ("events file not found: …" said nothing of where the path came from)."""


def _open_run_record(cfg: Any, record: Path) -> Any:
    """``cfg`` loaded from ``record``, the config.yaml of the run it works on: a copied or moved project's run reads the
    copy's input files (:func:`conrec.run_home.follow_copy`), and a path still missing is noted for :func:`_guard`."""
    from conrec.run_home import follow_copy, missing_inputs

    cfg = follow_copy(cfg, record)
    for path in missing_inputs(cfg):
        _FROM_RECORD[str(path)] = (
            f" (this path is named by the run's {record}, written where the run was made; if its project moved, pass "
            f"-c with the project's config and -r {shlex.quote(str(record.parent))}, or set the path in that file)"
        )
    return cfg


def _check_run_record(config: Path, run_dir: Path) -> None:
    """Refuse ``-c RUN/config.yaml`` when that file is a run's own record but its ``run_dir`` names another
    directory: a copied run's record keeps the original's path, and a relative one depends on where the command
    runs, so the command would have read, and written, another run than the one the file sits in."""
    from conrec.errors import ConfigError
    from conrec.stages import STAGES

    home = config.parent
    if config.name != "config.yaml" or not any((home / stage / "_done.json").exists() for stage in STAGES):
        return  # not a run directory's record: a config file like any other
    if home.resolve() != Path(run_dir).resolve():
        raise ConfigError(
            f"{config} is the record of the run in {home}, but its run_dir is {run_dir} ({Path(run_dir).resolve()}), "
            f"another directory: pass -r {shlex.quote(str(home))} to work on the run in {home}, or -r to name the other run"
        )


def _start(cfg: Any) -> Any:
    """Per-process setup before a stage runs: torch threads for this machine, quiet third parties."""
    from conrec.runtime import prepare_process

    prepare_process(cfg.threads)
    return cfg


STOPPED_STAGE = (
    "nothing half-written is kept (a stage is marked done only when it finishes); rerun the command to go on "
    "(sft and grpo resume from their last checkpoint, written every save_steps steps)"
)
"""What the Ctrl-C line says after a command that runs stages (a stage, ``demo``, ``ablate``)."""
STOPPED_COMMAND = "stopped before it finished; no file it writes is left half-written (each is written whole or not at all)"
"""What it says after a command that runs no stage (``init``, ``predict``, ``score``, ``analyze``, ``config``)."""
STOPPED_SERVER = "the server stopped before it was serving; it writes nothing"
"""What it says after ``conrec serve``: only while it starts (once serving, uvicorn takes Ctrl-C and shuts down)."""


def _guard(fn: Callable[[], Any], stopped: str = STOPPED_COMMAND, launchable: bool = False) -> Any:
    """Run a command body; print conrec errors as one red line and exit 2 (no traceback). Ctrl-C
    says what state the run is in (``stopped``: one of the ``STOPPED_*`` texts, as fits the command; exit 130, as
    shells expect), instead of leaving only the last
    progress line on the screen; SIGTERM is handled the same way (:func:`_sigterm_as_interrupt`, exit 143). The
    process is the CLI's own: third-party bars and advisory warnings are
    silenced for good here, not by the library calls it makes (they undo theirs for a library caller).

    ``launchable``: the command runs as several processes of a launch (``sft``, ``grpo``); as one of them it keeps
    SIGTERM's default action, as ``-m conrec.llm.training.sft|grpo`` does (:func:`_sigterm_kept_for_a_launch`)."""
    from conrec.runtime import quiet_third_party

    quiet_third_party()
    try:
        with nullcontext() if launchable and _sigterm_kept_for_a_launch() else _sigterm_as_interrupt():
            return fn()
    except ConrecError as exc:
        said = str(exc) + "".join(why for path, why in _FROM_RECORD.items() if path in str(exc))
        err_console.print(f"[bold red]error:[/] {escape(said)}")  # escaped: a message may quote "[nan]"
        raise typer.Exit(2) from None
    except Exception as exc:
        if (line := write_error_line(exc)) is None:
            raise
        # a read-only mount, a directory of another user, a full disk (a library's own error type too): which file
        # and why, not a traceback
        err_console.print(f"[bold red]error:[/] {escape(line)}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt as exc:
        _say_interrupted(exc, stopped)
        raise typer.Exit(_interrupt_status(exc)) from None
    except SystemExit as exc:
        if (interrupt := _during_interrupt(exc)) is None:
            raise
        _say_interrupted(interrupt, stopped)
        raise typer.Exit(_interrupt_status(interrupt)) from None


def _sigterm_kept_for_a_launch() -> bool:
    """Whether this process is one of several of a launch (``WORLD_SIZE`` above 1 with a rank), where SIGTERM keeps its
    default action.

    Why: torchrun and ``accelerate launch`` stop a launch by sending SIGTERM to every process. Raised as
    :class:`Terminated`, it left a process blocked in a native call (a collective waiting for a peer that died) running
    until the launcher's SIGKILL, and every process that unwound printed its own ``terminated:`` line."""
    from conrec.run_lock import exported_world_size

    return exported_world_size() > 1


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread where Ctrl-C raises :class:`KeyboardInterrupt` (:func:`_sigterm_as_interrupt`).

    Why a KeyboardInterrupt: every ``finally`` and context manager that cleans up after Ctrl-C (the run lock's owner
    file, a write's hidden temporary, ``conrec init``'s check file) and everything that treats Ctrl-C as a stop (uvicorn's
    run, the workers' supervisor) then does the same for SIGTERM."""


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread, as Ctrl-C raises KeyboardInterrupt;
    outside it (and outside the main thread, where Python cannot take signals) nothing changes.

    Why: SIGTERM is what ``docker stop``, systemd, Kubernetes and ``timeout`` send, and its default action ended the
    process at once: exit 143 with no line, no ``finally`` run, so the run lock's owner file, a stage's
    ``.model.XXXXXXXX.tmp`` and ``conrec init``'s ``.my.yaml.check.yaml`` stayed behind. Once raised, the default action
    is back, so a second SIGTERM ends a slow cleanup at once; a process forked inside the block (a data loader's worker)
    keeps the default action too. A server's uvicorn installs its own handler while it serves, and gives SIGTERM back
    to this one after its graceful shutdown, which then ends as after Ctrl-C; ``serve.processes`` > 1: the supervisor's
    handler replaces it for good."""
    import signal

    from conrec.runtime import signal_handlers

    owner = os.getpid()

    def terminate(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if os.getpid() != owner:  # a forked child: the default action, as if no handler had been installed
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated

    with signal_handlers({signal.SIGTERM: terminate}):
        yield


def _interrupt_status(interrupt: KeyboardInterrupt) -> int:
    """The exit status shells give a process ended by the signal: 128 + SIGINT (130) or 128 + SIGTERM (143)."""
    return 143 if isinstance(interrupt, Terminated) else 130


def _during_interrupt(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C (or SIGTERM: :class:`Terminated`) that was unwinding when ``exc`` was raised (a KeyboardInterrupt
    among its contexts), or None.

    Why: Ctrl-C at ``conrec sft | tee log`` kills ``tee`` too; the cleanup's last progress line then met a dead
    pipe and rich turned that into ``SystemExit(1)``, which replaced the interrupt: exit 1 and no "interrupted"
    line, where scripts and ``set -o pipefail`` look for 130."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return seen
        seen = seen.__context__
    return None


def _say_interrupted(interrupt: KeyboardInterrupt, stopped: str) -> None:
    """The Ctrl-C line on stderr (``terminated:`` for SIGTERM), if stderr can still take it (a dead pipe there too
    must not change the exit). Why ``stopped``: the stages' text (done markers, checkpoints) was said after every
    command, also after ``serve``, ``init`` and ``predict``, which run no stage. Said by the main process of a launch
    only (Ctrl-C reaches every process of ``torchrun ... conrec sft``, and each printed the line), as errors are."""
    from conrec.run_lock import is_worker_rank

    if is_worker_rank():
        return
    label = "terminated:" if isinstance(interrupt, Terminated) else "interrupted:"
    try:
        err_console.print(f"[yellow]{label}[/] {stopped}")
    except (OSError, SystemExit):  # rich answers a broken pipe with SystemExit(1)
        pass


def _stage(stage: str, config: Path | None, run_dir: Path | None, **kwargs: Any) -> Any:
    """One stage run alone: inputs checked, downstream invalidated, the run's record updated."""
    from conrec.pipeline import run_stage

    return run_stage(_load(config, run_dir), stage, console=console, **kwargs)


@app.command()
def data(config: Path | None = ConfigOpt, run_dir: Path | None = RunDirOpt) -> None:
    """Load events + items into canonical Parquet, split by time, build future-window labels."""
    _guard(lambda: _stage("data", config, run_dir), STOPPED_STAGE)


@app.command()
def analyze(
    config: Path | None = ConfigOpt,
    run_dir: Path | None = RunDirOpt,
    horizons: str = typer.Option("1,3,7,14", help="comma-separated future windows in days"),
) -> None:
    """How much of a user's future dislike set the next negative covers (CoNRec motivation study)."""
    from conrec.data.analyze import parse_horizons, run
    from conrec.pipeline import require_current
    from conrec.runs import RunDir

    def body() -> None:
        days = parse_horizons(horizons)  # a bad value is named before anything is read
        cfg = _load(config, run_dir)
        require_current(RunDir(cfg.run_dir), cfg, ["data"], who="analyze")
        run(cfg, horizons=days, console=console)

    _guard(body)


@app.command()
def sid(config: Path | None = ConfigOpt, run_dir: Path | None = RunDirOpt) -> None:
    """Encode item text, quantize with RQ-VAE (or residual k-means), write the collision-free SID map."""
    _guard(lambda: _stage("sid", config, run_dir), STOPPED_STAGE)


# The command's earlier name, kept so existing scripts keep working; hidden from --help.
app.command(name="tokenize", hidden=True, help="Alias of `conrec sid`.")(sid)


@app.command()
def sft(
    config: Path | None = ConfigOpt,
    run_dir: Path | None = RunDirOpt,
    resume: bool = typer.Option(True, help="resume from the last complete checkpoint if one exists"),
) -> None:
    """Supervised fine-tuning: SID vocabulary, alignment tasks, next/future-negative prediction."""
    _guard(lambda: _stage("sft", config, run_dir, resume=resume), STOPPED_STAGE, launchable=True)


@app.command()
def grpo(
    config: Path | None = ConfigOpt,
    run_dir: Path | None = RunDirOpt,
    resume: bool = typer.Option(True, help="resume from the last checkpoint if one exists"),
) -> None:
    """Progressive GRPO with the multi-day future-negative reward."""
    _guard(lambda: _stage("grpo", config, run_dir, resume=resume), STOPPED_STAGE, launchable=True)


@app.command()
def predict(
    config: Path | None = ConfigOpt,
    run_dir: Path | None = RunDirOpt,
    history: Path | None = typer.Option(None, help=HISTORY_HELP),
    split: str | None = typer.Option(None, help="batch mode: predict every sample of this split"),
    out: Path | None = typer.Option(None, "--out", "-o", help="output .parquet file (a split; one history: the printed table)"),
    model: str = typer.Option("grpo", help="which checkpoint: grpo or sft"),
    k: int | None = typer.Option(None, min=1, help="how many items (default: a --history body's \"k\", else decode.top_k)"),
    explain: bool = typer.Option(False, "--explain", help="one history only (refused with --split; per row: score --batch --explain): cite the past dislikes each item resembles"),
) -> None:
    """Top-K likely dislikes for one history (JSON) or a whole split (Parquet), with each item's score
    (log p(SID | prompt) + w * log prior(item), w = decode.popularity_prior: a log-probability only when w = 0)."""

    def body() -> None:
        from conrec.llm.inference.predict_request import check_predict_request

        cfg = _load(config, run_dir)
        # Checked before torch/transformers are even imported: a bad request fails in about a second.
        request = check_predict_request(cfg, history, split, model, explain=explain, out=out)
        _start(cfg)
        from conrec.llm.inference.predict import run

        run(
            cfg, history=request.history, split=split, out=out, model=model, k=k or request.k or cfg.decode.top_k,
            console=console, explain=explain or request.explain, exclude=request.exclude,
        )

    _guard(body)


@app.command()
def score(
    config: Path | None = ConfigOpt,
    run_dir: Path | None = RunDirOpt,
    request: Path | None = typer.Option(
        None, help='one request, JSON as for POST /v1/score: {"negative": [...], "positive": [...], "candidates": [...]}'
    ),
    batch: Path | None = typer.Option(None, help="Parquet: candidates + hist_items/hist_feedback (or negative/positive, or a user_id of the run's events) per row"),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="output .parquet file (a batch: default eval/predictions/<model>_scores.parquet; a request: the printed table)"
    ),
    model: str = typer.Option("grpo", help="which checkpoint: grpo or sft"),
    threshold: float | None = typer.Option(
        None, help="filter candidates whose score >= threshold; an LM's score (<= 0, e.g. -8) is " + LM_SCORE
    ),
    explain: bool = typer.Option(False, "--explain", help="cite the user's past dislikes each candidate resembles (a batch: a reasons column)"),
) -> None:
    """Dislike score of every candidate of a slate (one JSON request or a Parquet batch)."""
    from conrec.llm.inference.score import run

    _guard(lambda: run(_load(config, run_dir), request=request, batch=batch, out=out, model=model,
                       threshold=threshold, explain=explain, console=console))


@app.command()
def init(
    events: Path = typer.Argument(..., help="events file: CSV, TSV or Parquet, one row per user-item feedback"),
    items: Path | None = typer.Option(None, "--items", help="item metadata file (a title column at least)"),
    out: Path = typer.Option(Path("my.yaml"), "--out", "-o", help="config file to write"),
    preset: str = typer.Option("demo", help="model and training settings to start from: demo, tiny, full, smollm2 or gemma3"),
    force: bool = typer.Option(False, "--force", help="overwrite --out if it exists"),
    user_col: str | None = typer.Option(None, "--user-col", help="the user id column, when the guess is ambiguous"),
    item_col: str | None = typer.Option(None, "--item-col", help="the events file's item id column"),
    items_item_col: str | None = typer.Option(
        None, "--items-item-col", help="the items file's item id column, when it is named otherwise than the events file's"
    ),
    time_col: str | None = typer.Option(None, "--time-col", help="the timestamp column (epoch s/ms or date/time)"),
    rating_col: str | None = typer.Option(None, "--rating-col", help="the rating column, or a -1/0/+1 feedback column"),
    title_col: str | None = typer.Option(None, "--title-col", help="the items file's title column"),
    text_col: str | None = typer.Option(None, "--text-col", help="the items file's description column"),
    category_col: str | None = typer.Option(None, "--category-col", help="the items file's category/genre column"),
    time_format: str | None = typer.Option(
        None, "--time-format", help="the layout of date/time strings, e.g. '%m/%d/%Y %H:%M', when month/day and day/month are ambiguous"
    ),
) -> None:
    """Guess the column mapping of your own files and write a commented config (then: conrec data -c it)."""
    import sys

    from conrec.init_config import init_config, summary_lines

    flags = {"user_id": user_col, "item_id": item_col, "ts": time_col, "rating": rating_col,
             "title": title_col, "text": text_col, "category": category_col, "items_item_id": items_item_col}
    given = {role: col for role, col in flags.items() if col is not None}
    command = "conrec " + " ".join(shlex.quote(a) for a in sys.argv[1:])

    def body() -> None:
        path, guessed = init_config(events, items, out, given, preset=preset, force=force, command=command, ts_format=time_format)
        console.print("[bold]guessed[/] (check the comments in the file):", highlight=False)
        for line in summary_lines(guessed):
            console.print("  " + escape(line), highlight=False)
        console.print(f"wrote {escape(str(path))}; next: [bold]conrec data -c {escape(shlex.quote(str(path)))}[/]", highlight=False, soft_wrap=True)

    _guard(body)


@app.command(name="eval")
def eval_(config: Path | None = ConfigOpt, run_dir: Path | None = RunDirOpt) -> None:
    """Evaluate baselines and LM checkpoints; write report.md and PNG plots."""
    _guard(lambda: _stage("eval", config, run_dir), STOPPED_STAGE)


@app.command("config")
def show_config(
    config: Path | None = ConfigOpt,
    run_dir: Path | None = RunDirOpt,
    reference: bool = typer.Option(False, "--reference", help="markdown table of every setting with its default and, for a choice, its allowed values"),
) -> None:
    """Print the effective YAML config (defaults filled in, derived ones too: to change settings, write a small file
    with `base: preset:<name>` and only the keys you change, not an edited copy of this output; without `base` a file
    starts from the library defaults, not a preset), or the reference of every setting."""
    from conrec.config import config_reference_markdown, dump_effective_config

    if reference and (config is not None or run_dir is not None):  # it was silently ignored: -c seemed to be shown
        err_console.print(
            "[bold red]error:[/] --reference prints every setting's default and reads no config; drop -c/-r, or drop "
            "--reference to print the effective config"
        )
        raise typer.Exit(2)
    if reference:  # a terminal shows "<" as itself; a file or pipe gets the Markdown escape (&lt;), as the docs hold it
        import sys

        print(config_reference_markdown(escape_html=not sys.stdout.isatty()))
    else:
        _guard(lambda: print(dump_effective_config(_load(config, run_dir, check_record=False)), end=""))


@app.command()
def ablate(
    config: Path | None = ConfigOpt,
    run_dir: Path | None = RunDirOpt,
    what: str = typer.Option(
        "grpo",
        help="grpo: SFT / next-neg GRPO / future GRPO / progressive; prompts: every prompt variant (neg_only, segmented, merged, timeline, neg_timeline); "
        "paper: the CoNRec paper's Table 2 ladder (SID-title, + alignment, + progressive GRPO, + future reward, + positive penalty)",
    ),
) -> None:
    """Reproduce an ablation table with one command."""
    from conrec.ablation import run as run_ablation

    def body() -> Any:
        cfg = _load(config, run_dir)
        if config is None and not (Path(cfg.run_dir) / "config.yaml").exists():  # it trained the library defaults for an hour
            raise ConfigError(
                f"conrec ablate varies the run's own settings, and {cfg.run_dir} has no config.yaml: "
                f"run `conrec demo -r {shlex.quote(str(cfg.run_dir))}` first, or pass -c CONFIG"
            )
        return run_ablation(_start(cfg), what=what, console=console)

    _guard(body, STOPPED_STAGE)


@app.command()
def serve(
    config: Path | None = ConfigOpt,
    run_dir: Path | None = RunDirOpt,
    host: str | None = typer.Option(None, help="address to listen on (default: serve.host)"),
    # checked here: 0 served on the config's port, 70000 was a traceback after the model had loaded
    port: int | None = typer.Option(None, min=1, max=65535, help="port to listen on, 1-65535 (default: serve.port)"),
) -> None:
    """HTTP service: POST /v1/dislikes -> top-K likely dislikes."""
    from conrec.serve.app import run

    _guard(lambda: run(_start(_load(config, run_dir)), host=host, port=port), STOPPED_SERVER)


@app.command()
def demo(
    config: Path | None = ConfigOpt,
    run_dir: Path | None = RunDirOpt,
    force: bool = typer.Option(False, "--force", help="rerun finished stages"),
) -> None:
    """The whole pipeline (data -> SIDs -> SFT -> GRPO -> report) on the data the config names; default preset:demo, the embedded MovieLens-100K."""
    from conrec.pipeline import run_demo

    # the ablation tables of the stages it runs again are marked stale by each stage run (conrec.pipeline.run_stage)
    _guard(lambda: run_demo(_load(config, run_dir, default_preset="demo"), force=force, console=console), STOPPED_STAGE)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
