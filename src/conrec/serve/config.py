"""Configuration of the HTTP service."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from conrec.config_base import StrictConfig
from conrec.errors import ConfigError

MAX_K_LIMIT = 1000  # serve.max_k's bound: see its description


class ServeConfig(StrictConfig):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(
        "127.0.0.1", description="bind address; loopback by default (binding beyond it logs a warning, louder without api_key)"
    )
    port: int = Field(8000, ge=1, le=65535)
    model: Literal["grpo", "sft", "popular"] = Field(
        "grpo",
        description="checkpoint to serve; grpo falls back to sft if no GRPO model is current for the config; "
        "popular = global dislike-popularity baseline (no LM; the data and sid stages must be current)",
    )
    default_k: int = Field(10, ge=1, description="k when a request gives none")
    unknown_items: Literal["error", "skip"] = Field(
        "error",
        description="item ids the model does not know (items newer than its catalogue): error = 422 naming them; skip = "
        "history events on them are left out and such candidates come back unscored (score, rank and decision null), "
        "each response listing them under skipped_items",
    )
    max_k: int = Field(
        50,
        ge=1,
        description=f"largest k a request may ask (larger: 422); at most {MAX_K_LIMIT} (`conrec serve` refuses more): the beam "
        "search keeps max(k, "
        "decode.num_beams) beams per history, so a request's time and memory grow with k squared (a tiny model: "
        "k 2,000 took 0.36 s, 20,000 39 s and 6 GB); to rank many items, send them as a slate to /v1/score",
    )
    max_history: int = Field(500, ge=1, description="longer histories are rejected with 413")
    max_batch: int = Field(64, ge=1)
    max_candidates: int = Field(200, ge=1, description="largest slate /v1/score accepts (larger: 413)")
    explain_top_n: int = Field(50, ge=1, description="co-dislike neighbours kept per item for explanations")
    processes: int = Field(
        1,
        ge=1,
        description="uvicorn worker processes, each with its own copy of the model, its own queue (max_queue) and "
        "micro-batcher, and (if threads is unset) an equal share of the cores; >1 lets concurrent requests use "
        "every core (docs/serving-performance.md)",
    )
    worker_ping_timeout_s: int = Field(
        30,
        ge=1,
        le=3600,
        description="with processes > 1: seconds a worker process may leave uvicorn's health ping unanswered before it is "
        "killed as hung and restarted (uvicorn's timeout_worker_healthcheck, 5 by default); a starting worker answers only "
        "once it has imported conrec's server modules, which took over 5 s on a loaded machine, and was killed and restarted. "
        "The cost: uvicorn's supervisor pings the workers one after another and acts on Ctrl-C or SIGTERM, and "
        "notices a crashed worker, only between rounds of pings, so each worker that does not answer (hung, stopped) "
        "delays a stop by up to this long (three hung workers: up to 90 s, systemd's default stop timeout)",
    )
    inference_workers: int = Field(
        1,
        ge=1,
        description="predictor calls allowed at once; torch already uses every core per call, so "
        "concurrent calls only contend (concurrent single requests are micro-batched instead: batch_window_ms)",
    )
    batch_window_ms: float = Field(
        5.0,
        ge=0,
        le=1000,
        description="micro-batching: after the first single /v1/dislikes or /v1/score request, wait up to this long for "
        "concurrent ones to answer together in one model pass (never longer than until every admitted request is in)",
    )
    batch_max_size: int = Field(
        16, ge=1, description="micro-batching: most single requests answered by one model pass; 1 = no micro-batching"
    )
    max_queue: int = Field(
        16, ge=0, description="requests allowed to wait for a busy model; beyond that the answer is 503 with Retry-After"
    )
    retry_after_s: int = Field(1, ge=1, description="Retry-After seconds sent with a 503 when the queue is full")
    request_read_timeout_s: float = Field(
        30.0, gt=0, le=3600,
        description="seconds a request may take to arrive whole (from the connection, or the previous response on it); "
        "a slower one is closed (uvicorn has no read timeout: idle or trickling connections held file descriptors forever)",
    )
    max_body_bytes: int = Field(
        2_000_000, ge=1_000, description="larger request bodies get 413 before being read or parsed"
    )
    allowed_hosts: list[str] | None = Field(
        None,
        min_length=1,
        description="Host header names the server answers (others get 400), against DNS rebinding: a web page whose "
        "domain re-resolves to 127.0.0.1 could otherwise read a loopback server. null: loopback names only (localhost, "
        "127.0.0.1, ::1) when bound to loopback, any name otherwise; a list: those names (with a port or not), plus the loopback names when bound to loopback; ['*']: any name",
    )
    api_key: str | None = Field(
        None,
        description="if set (or $CONREC_API_KEY), every endpoint but /healthz and the /ui page shell (not its data) needs 'Authorization: Bearer <key>' "
        "or 'X-API-Key: <key>'; printable ASCII only (a browser sends it as Latin-1, other clients as UTF-8); "
        "prefer the environment variable (the config is copied into the run dir)",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    access_log: bool = True

    @model_validator(mode="after")
    def _default_k_fits(self) -> ServeConfig:
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) must not exceed max_k ({self.max_k})")
        return self


def check_max_k(cfg: ServeConfig) -> None:
    """``serve.max_k`` within :data:`MAX_K_LIMIT`, else one line with the reason: for `conrec serve` only.

    Why not at config load: a run's ``config.yaml`` written before the bound (``max_k: 2000`` was valid) then failed
    every command on the run, `conrec predict` and `conrec eval` included, which never read it."""
    if cfg.max_k > MAX_K_LIMIT:
        raise ConfigError(
            f"serve.max_k: {cfg.max_k} is over {MAX_K_LIMIT}: the beam search's time and memory grow with k squared (k "
            "20,000 took 39 s and 6 GB on a tiny model; docs/serving.md); to rank many items, send them as a slate to "
            "/v1/score"
        )
