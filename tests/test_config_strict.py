"""Config files: values of the wrong kind and unreadable paths are one-line errors naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conrec.config import load_config
from conrec.errors import ConfigError


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("sft:\n  train:\n    max_steps: true\n", "sft.train.max_steps: Value error, must be a number, not the boolean true"),
        ('seed: "0"\n', "seed: Value error, must be int, not the string '0' (remove the quotes)"),
        ("seed: abc\n", "seed: Value error, must be int, not the string 'abc'\n"),  # no quotes to remove: no such hint
        ("seed: '1.5'\n", "must be int, not the string '1.5'\n"),
        ("threads: '2'\n", "threads"),
        ("serve:\n  max_k: false\n", "serve.max_k"),
        ("eval:\n  swing:\n    alpha: 'x'\n", "alpha"),
    ],
)
def test_a_bool_or_a_quoted_number_is_not_silently_converted(tmp_path: Path, yaml_text: str, needle: str) -> None:
    # regression (issue 24.7): `max_steps: true` was read as 1 and `seed: "0"` as 0
    p = tmp_path / "c.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError, match="invalid config") as err:
        load_config(p)
    assert needle in str(err.value) + "\n"


def test_conversions_yaml_needs_still_work(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("seed: 3\nrun_dir: somewhere\nsft:\n  train:\n    learning_rate: 1\n")
    cfg = load_config(p)
    assert cfg.seed == 3 and cfg.run_dir == Path("somewhere") and cfg.sft.train.learning_rate == 1.0


def test_a_directory_as_config_is_a_one_line_error(tmp_path: Path) -> None:
    # regression (issue 24.6): IsADirectoryError traceback
    with pytest.raises(ConfigError, match="is a directory, not a YAML file"):
        load_config(tmp_path)


def test_a_non_utf8_config_is_a_one_line_error(tmp_path: Path) -> None:
    # regression (issue 24.6): UnicodeDecodeError traceback
    p = tmp_path / "c.yaml"
    p.write_bytes(b"seed: 1\n\xff\xfe\x00garbage\n")
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte 8"):
        load_config(p)


def test_the_cli_prints_one_line_for_a_directory_config(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from conrec.cli import app

    result = CliRunner().invoke(app, ["data", "-c", str(tmp_path)])
    assert result.exit_code != 0
    assert "is a directory" in result.output and "Traceback" not in result.output


def test_settings_that_can_only_fail_later_are_refused_in_one_line(tmp_path: Path) -> None:
    """Every SFT task weight 0 ended in TRL's StopIteration traceback; a GRPO batch that does not hold whole
    groups of num_generations ended in TRL's ValueError traceback after the model had loaded."""
    from conrec.stages import STAGE_REGISTRY

    zero = {"next_negative": 0, "future_negative": 0, "sid_to_title": 0, "title_to_sid": 0, "sid_to_category": 0}
    with pytest.raises(ConfigError, match="every task weight is 0"):
        load_config(None, {"sft": {"tasks": zero}})
    cfg = load_config(None, {"run_dir": str(tmp_path), "grpo": {"num_generations": 3, "batch_size": 8}})
    with pytest.raises(ConfigError, match=r"grpo.batch_size \(8\) x processes \(1\) must be a multiple of grpo.num_generations \(3\)"):
        STAGE_REGISTRY["grpo"].call(cfg)  # before any input is read: the run dir is empty
    from conrec.llm.training.grpo import check_group_batch

    check_group_batch(8, 3, 3)  # three processes hold 24 completions: whole groups of 3
    with pytest.raises(ConfigError, match=r"\(4\) x processes \(1\)"):
        check_group_batch(4, 1, 8)
    check_group_batch(4, 2, 8)
    # rollout: sample draws a group split across processes twice, independently (found by probing: duplicate items)
    for batch_size, processes, g in ((8, 3, 3), (4, 2, 8), (6, 2, 4)):
        with pytest.raises(ConfigError, match=rf"grpo.rollout: sample on {processes} processes needs grpo.batch_size \({batch_size}\) to be a multiple of grpo.num_generations \({g}\)"):
            check_group_batch(batch_size, processes, g, "sample")
        check_group_batch(batch_size, processes, g, "beam")
    check_group_batch(16, 2, 8, "sample")  # preset:full's layout: every process holds whole groups
    check_group_batch(4, 1, 4, "sample")
    # found by probing: SASRec's constructor raised a bare ValueError (a traceback) after SFT and GRPO had trained
    with pytest.raises(ConfigError, match=r"eval.sasrec: .*hidden \(10\) must be divisible by heads \(4\)"):
        load_config(None, {"eval": {"sasrec": {"hidden": 10, "heads": 4}}})
    with pytest.raises(ConfigError, match=r"hidden \(64\) must be divisible by heads \(3\)"):  # a grid point too
        load_config(None, {"eval": {"sasrec": {"grid": {"heads": [2, 3]}}}})
    # a repeated baseline or model was tuned, fitted and scored twice for one report row
    with pytest.raises(ConfigError, match=r"eval.baselines: .*\['popularity'\] listed more than once"):
        load_config(None, {"eval": {"baselines": ["popularity", "ease", "popularity"]}})
    with pytest.raises(ConfigError, match=r"eval.models: .*\['sft'\] listed more than once"):
        load_config(None, {"eval": {"models": ["sft", "sft"]}})


def test_a_named_grpo_schedule_ends_with_the_sft_positive_budget() -> None:
    """The presets' last stage is "the full positive budget": the SFT prompt's, as the non-progressive
    ablation uses, unless the preset names its own (it was a hard-coded 30)."""
    from conrec.config import PipelineConfig

    def budgets(raw: dict) -> list[int]:
        return [s.max_pos_items for s in PipelineConfig.model_validate(raw).grpo.stages]

    assert budgets({"sft": {"prompt": {"max_pos_items": 5}}}) == [0, 5, 5]
    assert budgets({"sft": {"prompt": {"max_pos_items": 5}}, "grpo": {"stages": "paper"}}) == [0, 0, 5]
    assert budgets({"sft": {"prompt": {"max_pos_items": 5}}, "grpo": {"stages": {"preset": "paper", "max_pos_items": 40}}}) == [0, 0, 40]
    assert budgets({}) == [0, 10, None]  # None: the SFT prompt's own context
    # a timeline layout caps no positive in its SFT windows and eval prompts: neither does the last stage
    assert budgets({"sft": {"prompt": {"variant": "neg_timeline", "max_pos_items": 5}}}) == [0, 10, None]
    cfg = PipelineConfig.model_validate({"sft": {"prompt": {"max_pos_items": 50}}})
    assert budgets(cfg.model_dump(mode="json")) == [0, 10, 50]  # a dumped and reloaded config says the same


def test_a_quoted_positive_budget_is_the_fields_own_error_once() -> None:
    """The schedule validator passed "30" on and min(10, "30") was a TypeError traceback."""
    with pytest.raises(ConfigError, match="remove the quotes") as err:
        load_config(None, {"sft": {"prompt": {"max_pos_items": "30"}}})
    assert "grpo" not in str(err.value)  # not reported again under a key the user never wrote


@pytest.mark.parametrize(
    "reward, match",
    [
        ("{w_hit: .nan}", r"grpo.reward.w_hit: Input should be a finite number"),  # TRL's nansum dropped the component
        ("{w_collab: .inf}", r"grpo.reward.w_collab: Input should be a finite number"),  # inf rewards, NaN advantages
        ("{w_liked: -0.5}", r"grpo.reward.w_liked: Input should be greater than or equal to 0"),  # the penalty a bonus
        ("{w_hit: 1.0e+300, w_collab: 1.0e+308}", r"grpo.reward.w_hit: Input should be less than or equal to 1000000"),  # inf in TRL's float32
        ("{mode: similarity, gamma: 1.0e+300}", r"grpo.reward.gamma: Input should be less than or equal to 1000000"),
        ("{w_sim: -1.0, mode: similarity}", r"grpo.reward.w_sim: Input should be greater than or equal to 0"),
        ("{w_hit: 0, w_collab: 0, w_prefix: 0, w_liked: 0}", r"w_hit, w_collab, w_prefix, w_liked, w_next are all 0"),
        ("{mode: similarity, w_sim: 0, gamma: 0}", r"grpo.reward \(similarity mode\): w_sim, gamma are all 0"),
    ],
)
def test_reward_weights_are_finite_non_negative_and_not_all_zero(tmp_path, reward: str, match: str) -> None:
    """Found by probing: NaN and inf weights, negative penalty weights and an all-zero reward (every group
    zero-advantage: GRPO saved the SFT weights as its model and the report showed a "grpo" row) were accepted."""
    path = tmp_path / "cfg.yaml"
    path.write_text(f"grpo:\n  reward: {reward}\n")
    with pytest.raises(ConfigError, match=match) as err:
        load_config(path)
    assert "\n" not in str(err.value)
    # the weights a mode does not read may be 0: next_neg weighs the next negative, similarity w_sim and gamma
    load_config(None, {"grpo": {"reward": {"mode": "next_neg", "w_hit": 0, "w_collab": 0, "w_prefix": 0, "w_liked": 0}}})
    load_config(None, {"grpo": {"reward": {"mode": "similarity", "w_hit": 0, "w_collab": 0, "w_prefix": 0, "w_liked": 0}}})


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        # the README's "data.split: {protocol: per_user, ...} added to the demo preset", written as the reference spells keys
        ("data.split: {protocol: per_user}\n", "data.split: Extra inputs are not permitted (a dotted key is not a path in a file: "
         "write nested mappings, data: {split: ...}, or each key indented under the one before)"),
        ("sft.train.max_steps: 3\n", "write nested mappings, sft: {train: {max_steps: ...}}"),
        ("sft:\n  train:\n    max_step: 5\n", "sft.train.max_step: Extra inputs are not permitted (did you mean max_steps"),
        ("eavl: {}\n", "eavl: Extra inputs are not permitted (did you mean eval?)"),
        ("grpo:\n  stages: [{name: a, steps: 1, max_pos_item: 3}]\n", "grpo.stages.0.max_pos_item: Extra inputs are not permitted (did you mean max_pos_items"),
    ],
)
def test_an_unknown_key_says_what_to_write_instead(tmp_path, text: str, needle: str) -> None:
    """pydantic's "Extra inputs are not permitted" read, for data.split, as if a valid key were refused, and pointed
    nowhere for a typo."""
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert needle in str(err.value), str(err.value)


def test_an_unknown_key_far_from_every_allowed_one_gets_no_guess(tmp_path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("sft:\n  zzzz: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(err.value).endswith("sft.zzzz: Extra inputs are not permitted")


@pytest.mark.parametrize("text", ["sft:\n", "sft: ~\n", "sft:\n  # train: {max_steps: 5}\n", "eval:\n  category:\n", "sft: {train: null}\n"])
def test_an_empty_section_takes_its_defaults_as_a_section_left_out(tmp_path, text: str) -> None:
    """"Sections left out take their defaults" (docs/configuration.md), but an empty one, every setting commented out,
    was refused: "sft: Input should be a valid dictionary or instance of SftConfig" (an internal class name)."""
    from conrec.config import PipelineConfig

    p = tmp_path / "c.yaml"
    p.write_text(text)
    assert load_config(p) == PipelineConfig()


def test_a_null_optional_section_stays_off(tmp_path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("sid: {collab: null}\nsft: {train: {lora: ~}}\n")
    cfg = load_config(p)
    assert cfg.sid.collab is None and cfg.sft.train.lora is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("serve: {api_key: 123456}\n", "serve.api_key: Value error, must be text, but YAML reads 123456 unquoted as a number: quote it as written, '123456'"),
        ("data: {ts_format: 2024-01-01}\n", "data.ts_format: Value error, must be text, but YAML reads 2024-01-01 unquoted as a date: quote it as written, '2024-01-01'"),
        ("run_dir: 2024\n", "run_dir: Value error, must be text, but YAML reads 2024 unquoted as a number"),
        ("serve: {api_key: on}\n", "serve.api_key: Value error, must be text, but YAML reads an unquoted on as a boolean: quote it, 'on'"),
        # the example is what was written, not the number YAML made of it (a user who copied '42798' got another key)
        ("serve: {api_key: 0123456}\n", "YAML reads 0123456 unquoted as a number (42798): quote it as written, '0123456'"),
        ("serve: {api_key: 0x1F}\n", "quote it as written, '0x1F'"),
        ("serve: {api_key: 1_000}\n", "quote it as written, '1_000'"),
        ("serve: {api_key: 12:30}\n", "quote it as written, '12:30'"),
        ("serve: {api_key: 1.50}\n", "YAML reads 1.50 unquoted as a number (1.5): quote it as written, '1.50'"),
        ("grpo: {stages: [{name: a, steps: 1}, {name: 1.0e+5, steps: 2}]}\n", "grpo.stages.1.name: Value error, must be text, but YAML reads 1.0e+5 unquoted as a number (100000.0): quote it as written, '1.0e+5'"),
    ],
)
def test_a_number_or_date_where_text_goes_is_told_to_be_quoted(tmp_path, text: str, needle: str) -> None:
    """`serve.api_key: 123456` got "Input should be a valid string", an integer path "Input is not a valid path for
    <class 'pathlib.Path'>": no word on the quotes that fix it."""
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert needle in str(err.value), str(err.value)


def test_a_number_in_a_text_setting_from_python_is_refused_without_a_yaml_example() -> None:
    """No file wrote it, so no text to quote: the example was the converted number, which a user copied as the key."""
    with pytest.raises(ConfigError) as err:
        load_config(None, {"serve": {"api_key": 42798}})
    assert str(err.value).endswith("serve.api_key: Value error, must be text, but YAML reads 42798 unquoted as a number: quote it as written")


@pytest.mark.parametrize("written", ["5e10", "1e3", "2E-3", "1.0e5", ".5e3", "+1e-4"])
def test_an_exponent_word_in_a_text_setting_is_read_as_written(tmp_path, written: str) -> None:
    """Earlier conrec (YAML 1.1) read ``5e10`` as a string and wrote such a string unquoted into a run's config.yaml;
    since exponent words read as floats, that config.yaml was refused ("serve.api_key: must be text, but YAML reads
    50000000000.0 unquoted as a number") and the run could not be loaded with -r. A float setting keeps the number."""
    p = tmp_path / "config.yaml"
    p.write_text(f"run_dir: {written}\nserve: {{api_key: {written}}}\ngrpo: {{learning_rate: {written}, stages: [{{name: {written}, steps: 1}}]}}\n")
    cfg = load_config(p)
    assert (str(cfg.run_dir), cfg.serve.api_key, cfg.grpo.stages[0].name) == (written, written, written)
    assert cfg.grpo.learning_rate == float(written)


def test_quoted_text_and_choice_words_are_unchanged(tmp_path) -> None:
    p = tmp_path / "c.yaml"
    # ts_format is read by the table source only (another source given it is refused)
    p.write_text("serve: {api_key: '123456'}\ndata: {source: table, events_path: e.csv, streaming: on, ts_format: '%Y-%m-%d'}\n")
    cfg = load_config(p)
    assert (cfg.serve.api_key, cfg.data.streaming, cfg.data.ts_format) == ("123456", "on", "%Y-%m-%d")


def test_the_budget_refusal_of_the_facet_rule_added_on_simulated_data_says_so_at_eval(tmp_path) -> None:
    """Found by review: with eval.baselines unset on simulated data, facet_rule is added; its grid over the budget was
    refused at "<root>" as if the user had listed it."""
    from conrec.eval.config import DEFAULT_BASELINES, EvalConfig

    defaults = EvalConfig()  # each default baseline's grid cut to its first value per setting (a new baseline joins)
    grids = {name: {k: v[:1] for k, v in getattr(defaults, name).grid.items()} for name in DEFAULT_BASELINES}
    evals = {"tune_budget": 2, **{name: {"grid": grid} for name, grid in grids.items()}}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"data": {"source": "simulator"}, "eval": evals}))
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "<root>" not in msg and f"in {p}: eval: Value error, facet_rule joins the baselines on simulated data when eval.baselines is unset" in msg, msg
    assert "eval.facet_rule.grid has" in msg
