"""``conrec init`` (issue 22): guesses the column mapping from the header and a sample, says why,
and refuses to guess silently when a role is ambiguous or missing."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from conrec.cli import app
from conrec.config import load_config
from conrec.data.engine.scan import scan_table, table_items
from conrec.data.guess import guess, suggest_thresholds
from conrec.data.loaders import load_source
from conrec.data.repair import RepairLog
from conrec.errors import ConfigError, DataValidationError
from conrec.init_config import init_config, summary_lines

HALF_STARS = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]


def _unusual_files(tmp_path: Path) -> tuple[Path, Path]:
    rows = [f"c{u},m{(u * 7 + k) % 40},{HALF_STARS[(u + 3 * k) % 10]},{1_600_000_000 + k * 3_600 + u}" for u in range(20) for k in range(15)]
    ev = tmp_path / "ratings.csv"
    ev.write_text("customer,movie,stars,rated_at\n" + "\n".join(rows) + "\n")
    it = tmp_path / "movies.csv"
    it.write_text("movie,name,genre,overview\n" + "\n".join(f"m{i},Movie {i},g{i % 4},about {i}" for i in range(40)) + "\n")
    return ev, it


def test_unusual_names_and_a_half_star_scale_are_guessed_and_the_config_loads(tmp_path: Path) -> None:
    ev, it = _unusual_files(tmp_path)
    out, g = init_config(ev, it, tmp_path / "my.yaml", preset="tiny")
    assert g.columns() == {"customer": "user_id", "movie": "item_id", "rated_at": "ts", "stars": "rating",
                           "name": "title", "genre": "category", "overview": "text"}
    assert (g.ts_unit, g.rating_range, g.dislike_max_rating, g.like_min_rating) == ("s", (0.5, 5.0), 2.0, 2.01)
    text = out.read_text()
    assert "'stars' is a usual name for rating" in text and "steps of 0.5" in text  # every guess says why
    cfg = load_config(out)
    assert cfg.data.source == "table" and cfg.data.rating_range == (0.5, 5.0) and cfg.data.events_path == ev.absolute()
    assert cfg.sft.train.max_steps == 20  # the rest is preset:tiny
    events, items = load_source(cfg.data)
    assert events.height > 0 and set(events["feedback"].unique()) == {-1, 1}
    assert items.filter(pl.col("item_id") == "m3")["category"].item() == "g3"


def test_feedback_columns_milliseconds_and_date_strings() -> None:
    ev = pl.DataFrame({"uid": ["a", "b"], "iid": ["x", "y"], "reaction": ["-1", "1"], "event_time": ["1704067200000", "1704067201000"]})
    g = guess(ev)
    assert g.columns() == {"uid": "user_id", "iid": "item_id", "reaction": "feedback", "event_time": "ts"}
    assert g.ts_unit == "ms" and g.rating_range is None
    dated = ev.with_columns(event_time=pl.Series(["2024-01-01 10:00:00", "2024-01-02 11:00:00"]))
    assert guess(dated).ts_unit == "auto"


def test_canonical_names_need_no_mapping() -> None:
    ev = pl.DataFrame({"user_id": ["a"], "item_id": ["x"], "ts": ["1"], "rating": ["1"]})
    ev = pl.concat([ev, ev.with_columns(rating=pl.lit("5"))])
    assert guess(ev).columns() == {}


def test_ambiguous_roles_are_refused_with_the_flag_that_settles_them() -> None:
    ev = pl.DataFrame({"user_id": ["a"], "uid": ["a"], "item_id": ["x"], "ts": ["1"], "feedback": ["-1"]})
    with pytest.raises(ConfigError, match=r"ambiguous user_id column.*\['user_id', 'uid'\].*--user-col"):
        guess(ev)
    assert guess(ev, given={"user_id": "uid"}).columns() == {"uid": "user_id"}
    with pytest.raises(ConfigError, match=r"--user-col 'nope': no such column"):
        guess(ev, given={"user_id": "nope"})


def test_missing_roles_are_refused_not_guessed() -> None:
    ev = pl.DataFrame({"user": ["a"], "item": ["x"], "col3": ["1"], "feedback": ["-1"]})
    with pytest.raises(ConfigError, match=r"looks like ts.*--time-col NAME \(conrec needs a time per event"):
        guess(ev)
    assert guess(ev, given={"ts": "col3"}).events["ts"].reason == "named by --time-col"
    no_rating = pl.DataFrame({"user": ["a"], "item": ["x"], "ts": ["1"], "misc": ["hello"]})
    with pytest.raises(ConfigError, match="--rating-col"):
        guess(no_rating)
    with pytest.raises(ConfigError, match="looks like a title.*--title-col"):
        guess(pl.DataFrame({"user": ["a"], "item": ["x"], "ts": ["1"], "feedback": ["-1"]}), pl.DataFrame({"item": ["x"], "foo": ["y"]}))


@pytest.mark.parametrize(
    ("values", "expected"),
    [(HALF_STARS, ((0.5, 5.0), 2.0, 2.01)), ([1, 2, 3, 4, 5], ((1.0, 5.0), 2.0, 2.01)), (list(range(1, 11)), ((1.0, 10.0), 4.0, 4.01)),
     ([0.1, 0.105, 0.2, 0.5, 0.9], ((0.1, 0.9), 0.38, 0.3825))],  # a scale finer than the margin: half its step above
)
def test_suggested_thresholds_follow_the_scale(values, expected) -> None:
    assert suggest_thresholds(pl.Series("r", values, dtype=pl.Float64))[:3] == expected


def test_item_ids_the_items_file_does_not_know_are_flagged_before_any_stage(tmp_path: Path) -> None:
    """Events say ``m7`` where the items file says ``M0007``: the data stage would drop every event. Init
    says so, with ids from both sides, in the terminal and in the file; matching files get no warning."""
    ev, it = _unusual_files(tmp_path)
    _, g = init_config(ev, it, tmp_path / "ok.yaml", preset="tiny")
    assert g.items_warning == ""
    it.write_text("movie,name\n" + "\n".join(f"M{i:04d},Movie {i}" for i in range(40)) + "\n")
    out, g = init_config(ev, it, tmp_path / "bad.yaml", preset="tiny")
    assert g.items_warning.startswith("40 of the 40 item ids in the events sample are not in the items file")
    assert "events ['m0', 'm1', 'm10'] vs items ['M0000', 'M0001', 'M0002']" in g.items_warning
    assert f"# WARNING: {g.items_warning}" in out.read_text()
    assert any(line.endswith(g.items_warning) for line in summary_lines(g))
    ev.write_text("customer, movie, stars, rated_at\n" + "".join(f"c{k}, M{k:04d}, {1 + k % 5}, {1_600_000_000 + k}\n" for k in range(40)))
    _, g = init_config(ev, it, tmp_path / "spaced.yaml", preset="tiny")  # ", " between fields: the ids carry the space
    assert "the ids differ by the spaces around them (' M0000' vs 'M0000')" in g.items_warning
    ev.write_text("customer,movie,stars,rated_at\n")  # a header only: said so, not "neither epoch numbers nor dates"
    with pytest.raises(DataValidationError, match=r"events file .*ratings.csv has no rows, only a header"):
        init_config(ev, it, tmp_path / "empty.yaml", preset="tiny")
    ev.write_text("customer,movie,stars,rated_at\n" + "".join(f"{k}.0,{k}.0,{1 + k % 5},{1_600_000_000 + k}\n" for k in range(40)))
    it.write_text("movie,name\n" + "\n".join(f"{i},Movie {i}" for i in range(40)) + "\n")
    assert init_config(ev, it, tmp_path / "floats.yaml", preset="tiny")[1].items_warning == ""  # pandas' 32.0 is read as 32


def test_other_text_columns_of_the_items_file_are_proposed_for_the_sid_text(tmp_path: Path) -> None:
    """An author or publisher column is kept by the data stage but not embedded unless named in
    sid.encoder.text_fields: init proposes the setting (a comment whose YAML loads as a config section);
    ids, numbers and links are not proposed."""
    ev, it = _unusual_files(tmp_path)
    it.write_text("movie,name,genre,Book-Author,Year,Image-URL\n"
                  + "\n".join(f"m{i},Movie {i},g{i % 4},Author {i % 5},{1990 + i},http://img/{i}.jpg" for i in range(40)) + "\n")
    out, g = init_config(ev, it, tmp_path / "my.yaml", preset="tiny")
    assert g.extra_text == ["Book-Author"]
    line = next(x for x in out.read_text().splitlines() if "other text column" in x)
    section = yaml.safe_load(line.split("set ", 1)[1])
    assert section == {"sid": {"encoder": {"text_fields": ["title", "category", "text", "Book-Author"]}}}
    assert load_config(out, section).sid.encoder.text_fields[-1] == "Book-Author"
    (tmp_path / "plain").mkdir()
    _, plain = init_config(*_unusual_files(tmp_path / "plain"), tmp_path / "plain.yaml", preset="tiny")
    assert plain.extra_text == []
    listed = tmp_path / "listed.parquet"  # a Parquet export: authors as a list of words, tags as numbers
    pl.DataFrame({"movie": [f"m{i}" for i in range(40)], "name": [f"Movie {i}" for i in range(40)],
                  "authors": [[f"Author {i % 5}", "Co"] for i in range(40)], "tags": [[i, i + 1] for i in range(40)]}).write_parquet(listed)
    assert init_config(ev, listed, tmp_path / "listed.yaml", preset="tiny")[1].extra_text == ["authors"]


def test_ratings_of_only_two_or_three_low_values_get_a_hint_at_a_wider_scale() -> None:
    """An export of 1- and 2-star ratings only was proposed as a 1..2 scale, whose 2 is a positive, without a word:
    every 2-star rating became a like. The proposal stands (the values cannot tell it from a real two-point scale),
    with a one-line hint at data.rating_range and the thresholds of a 1..5 scale; ordinary scales get none."""
    def ratings(values: list[float]) -> pl.DataFrame:
        n = len(values)
        return pl.DataFrame({"user_id": ["a"] * n, "item_id": [f"b{k}" for k in range(n)], "ts": ["1"] * n, "rating": values})

    g = guess(ratings([1, 2] * 10))
    assert (g.rating_range, g.dislike_max_rating) == ((1.0, 2.0), 1)
    assert g.scale_hint == ("the ratings hold only 1, 2: if these are the bottom of a wider scale, set data.rating_range to it, "
                            "e.g. [1, 5] with dislike_max_rating: 2, like_min_rating: 2.01")
    assert "\n" not in g.scale_hint and any(line.strip().startswith("hint: the ratings hold only 1, 2") for line in summary_lines(g))
    assert guess(ratings([0.5, 1, 1.5] * 5)).scale_hint.startswith("the ratings hold only 0.5, 1, 1.5:")
    for values in (HALF_STARS, [1, 2, 3, 4, 5, 4, 5, 3], [1, 5] * 5, [0, 1, 2] * 4):
        assert guess(ratings(values)).scale_hint == "", values


def test_a_scale_whose_lowest_value_is_most_rows_is_flagged_with_the_fix() -> None:
    """A code for "no rating" that is most rows and lies in the scale's own range (1 below 2..10): read as a scale, most
    events would be dislikes. The guess says so, with the settings for the 2..10 scale; ordinary scales get no warning.
    Book-Crossing's 0 and an anime log's -1 ("watched, not rated", most rows below 1..10) are "no rating" by the
    no-rating-code rule: the proposal is 1..10 and its warning says what keeping the code gives."""
    stars = ["1"] * 12 + [str(r) for r in range(2, 11)]
    coded = pl.DataFrame({"user_id": ["a"] * 21, "item_id": [f"b{k}" for k in range(21)], "ts": ["1"] * 21, "rating": stars})
    g = guess(coded)
    assert g.rating_range == (1.0, 10.0) and g.dislike_max_rating == 4 and g.outlier_warning == ""
    assert g.rating_warning.startswith("71% of the sampled ratings are <= 4")
    assert "57% are 1" in g.rating_warning and "rating_range: [2, 10]" in g.rating_warning
    assert "dislike_max_rating: 4, like_min_rating: 4.01" in g.rating_warning
    anime = pl.DataFrame({"user_id": ["a"] * 22, "anime_id": [f"b{k}" for k in range(22)], "ts": ["1"] * 22,
                          "rating": ["-1"] * 12 + [str(r) for r in range(1, 11)]})
    g = guess(anime)  # 20% of -1s made the proposal -1..10 with <= 2, every unrated view a dislike, with no warning
    assert (g.rating_range, g.dislike_max_rating, g.rating_warning) == ((1.0, 10.0), 4, "")
    assert g.outlier_warning.startswith("12 of the 22 sampled ratings (54.5%) are -1, below the 1..10 the rest span: -1 usually "
                                        "codes 'no rating' (as an anime log's -1, watched but not rated)")
    assert "conrec data drops the -1s" in g.outlier_warning and "if -1 is a rating, set rating_range: [-1, 10]" in g.outlier_warning
    book_crossing = pl.DataFrame({"User-ID": ["a"] * 22, "ISBN": [f"b{k}" for k in range(22)], "ts": ["1"] * 22,
                                  "Book-Rating": ["0"] * 12 + [str(r) for r in range(1, 11)]})
    g = guess(book_crossing)
    assert g.events["item_id"].column == "ISBN" and (g.rating_range, g.dislike_max_rating) == ((1.0, 10.0), 4) and g.rating_warning == ""
    assert g.outlier_warning.startswith("12 of the 22 sampled ratings (54.5%) are 0, below the 1..10 the rest span")
    assert g.outlier_warning.endswith("dislike_max_rating: 3, like_min_rating: 3.01 (then 68% of the sampled ratings would be "
                                      "dislikes, usually a minority)")
    for values in (HALF_STARS, [1, 2, 3, 4, 5, 4, 5, 3], list(range(1, 11))):
        ev = pl.DataFrame({"user": ["a"] * len(values), "item": ["x"] * len(values), "ts": ["1"] * len(values), "rating": values})
        assert guess(ev).rating_warning == ""


def test_cli_prints_its_guesses_refuses_to_overwrite_and_errors_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ev, it = _unusual_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    first = runner.invoke(app, ["init", "ratings.csv", "--items", "movies.csv", "-o", "my.yaml"])
    assert first.exit_code == 0, first.output
    assert "user_id <- 'customer'" in first.output and "conrec data -c my.yaml" in first.output
    assert yaml.safe_load((tmp_path / "my.yaml").read_text())["data"]["items_path"] == "movies.csv"  # relative to the config
    again = runner.invoke(app, ["init", "ratings.csv", "-o", "my.yaml"])
    assert again.exit_code == 2 and "--force" in again.output and "Traceback" not in again.output
    (tmp_path / "odd.csv").write_text("a,b,c\n1,2,3\n")
    odd = runner.invoke(app, ["init", "odd.csv", "-o", "odd.yaml"])
    assert odd.exit_code == 2 and "--user-col" in odd.output and not (tmp_path / "odd.yaml").exists()


def test_parquet_with_typed_columns(tmp_path: Path) -> None:
    ev = tmp_path / "events.parquet"
    pl.DataFrame({"visitor_id": ["a", "b", "a"], "sku": ["x", "y", "y"], "created_at": [1_700_000_000_000, 1_700_000_100_000, 1_700_000_200_000],
                  "score": [1.0, 10.0, 5.0]}).write_parquet(ev)
    out, g = init_config(ev, None, tmp_path / "p.yaml")
    assert g.columns() == {"visitor_id": "user_id", "sku": "item_id", "created_at": "ts", "score": "rating"}
    assert g.ts_unit == "ms" and g.rating_range == (1.0, 10.0)
    events, _ = load_source(load_config(out).data)
    assert events["ts"].to_list()[0] == 1_700_000_000


def test_parquet_with_categorical_columns_is_read_like_the_csv(tmp_path: Path) -> None:
    """pandas' ``category`` columns are dictionaries in Parquet (Categorical to polars): init stopped
    with a traceback ("cannot cast categorical types to Float64"); they are read as text, as in a CSV."""
    ev, it = _unusual_files(tmp_path)
    cat_ev, cat_it = tmp_path / "ratings.parquet", tmp_path / "movies.parquet"
    pl.read_csv(ev, infer_schema=False).with_columns(pl.col("customer", "movie", "stars").cast(pl.Categorical)).write_parquet(cat_ev)
    pl.read_csv(it).with_columns(pl.col("movie", "genre").cast(pl.Categorical)).write_parquet(cat_it)
    _, plain = init_config(ev, it, tmp_path / "plain.yaml", preset="tiny")
    out, g = init_config(cat_ev, cat_it, tmp_path / "cat.yaml", preset="tiny")
    assert g.columns() == plain.columns() and (g.rating_range, g.dislike_max_rating) == (plain.rating_range, plain.dislike_max_rating)
    events, items = load_source(load_config(out).data)
    assert events.height > 0 and set(events["feedback"].unique()) == {-1, 1}
    assert items.filter(pl.col("item_id") == "m3")["category"].item() == "g3"


def test_the_items_files_id_column_is_named_with_a_flag_of_its_own(tmp_path: Path) -> None:
    """Events naming items ``product_id`` and a catalogue naming them ``id``: init said the items file had
    no item id, naming no flag, and ``--item-col`` names the events file's column. ``--items-item-col``
    names it, mapped in data.columns; read in memory and streamed, ``007`` stays ``007``."""
    ev = tmp_path / "events.csv"
    ev.write_text("user,product_id,ts,rating\n" + "".join(f"u{k % 7},{k % 5:03d},{1_700_000_000 + k},{1 + k % 5}\n" for k in range(60)))
    it = tmp_path / "items.csv"
    it.write_text("id,name\n" + "".join(f"{k:03d},Item {k}\n" for k in range(5)))
    coded = tmp_path / "coded.csv"
    coded.write_text(it.read_text().replace("id,name", "code,name"))
    with pytest.raises(ConfigError, match="nor one that looks like an item id .*; pass --items-item-col NAME"):
        init_config(ev, coded, tmp_path / "my.yaml", preset="tiny")
    with pytest.raises(ConfigError, match="--items-item-col 'uid': no such column in the items file"):
        init_config(ev, it, tmp_path / "my.yaml", preset="tiny", given={"items_item_id": "uid"})
    with pytest.raises(ConfigError, match="'user' is also an events column"):
        guess(pl.read_csv(ev), pl.read_csv(it).rename({"name": "user"}).with_columns(name=pl.lit("x")), {"items_item_id": "user"})
    out, g = init_config(ev, it, tmp_path / "my.yaml", preset="tiny", given={"items_item_id": "id"})
    assert g.columns()["id"] == "item_id" and g.columns()["product_id"] == "item_id" and not g.items_warning
    cfg = load_config(out)
    events, items = load_source(cfg.data)
    assert sorted(items["item_id"]) == [f"{k:03d}" for k in range(5)] and events["item_id"].is_in(items["item_id"].implode()).all()
    assert sorted(table_items(cfg.data, scan_table(cfg.data), RepairLog())["item_id"]) == sorted(items["item_id"])


def test_a_catalogues_own_id_column_wins_over_a_name_that_contains_a_usual_word(tmp_path: Path) -> None:
    """Events' ``product_id`` and a catalogue ``id,product_name,category``: init took ``product_name`` as the items' id
    (it contains ``product``), then found no title and named --title-col, which failed as "both item_id and title";
    --items-item-col, the flag that settles it, was named by neither message. ``id`` now wins, and where the items' id
    is still a guess, the errors name --items-item-col."""
    ev = pl.DataFrame({"customer_id": ["C1", "C1", "C2", "C2"], "product_id": ["P1", "P2", "P1", "P2"], "stars": ["1", "5", "4", "2"],
                       "created_at": [str(1_700_000_000 + k) for k in range(4)]})
    catalogue = pl.DataFrame({"id": ["P1", "P2"], "product_name": ["Red shoe", "Blue hat"], "category": ["shoes", "hats"]})
    g = guess(ev, catalogue)
    assert (g.items["item_id"].column, g.items["title"].column) == ("id", "product_name")
    assert g.columns() == {"customer_id": "user_id", "product_id": "item_id", "created_at": "ts", "stars": "rating", "id": "item_id",
                           "product_name": "title"}
    assert "  item_id <- 'id': 'id' is the usual name of a table's own key (items file)" in summary_lines(g)
    assert guess(ev, catalogue.rename({"id": "Product ID"})).items["item_id"].column == "Product ID"  # the events' name, written otherwise
    assert guess(ev, catalogue.with_columns(sku=pl.col("id"))).items["item_id"].column == "sku"  # a usual item-id name first
    # still a guess (no id, the events' column absent): the errors name the flag that settles it
    coded = catalogue.rename({"id": "product_code"}).with_columns(pl.col("product_name").alias("label")).drop("product_name")
    with pytest.raises(ConfigError, match=r"looks like a title .*; pass --title-col NAME, or --items-item-col NAME if 'product_code', guessed"):
        guess(ev, coded)
    with pytest.raises(ConfigError, match=r"--title-col 'product_code' names the column guessed as the items file's id .*; pass --items-item-col NAME"):
        guess(ev, coded, {"title": "product_code"})
    with pytest.raises(ConfigError, match=r"ambiguous item id column in the items file: \['product_code', 'product_ref'\] .*--items-item-col NAME"):
        guess(ev, coded.with_columns(product_ref=pl.col("product_code")))
    assert guess(ev, coded, {"items_item_id": "product_code", "title": "label"}).columns()["product_code"] == "item_id"


def test_an_items_id_guessed_by_a_word_holds_no_word_of_another_item_role() -> None:
    """Only a usual name of another role (product_name) kept a column off the items' id found by a word: the catalogue
    code,item_description,title had item_description taken as its id (it contains "item"), and conrec data dropped every
    event as on an unknown item; product_code beside product_title or product_category was refused as ambiguous, though
    the docs give product_code as the example of a guessed id. A word of title, text or category now rules a column out."""
    ev = pl.DataFrame({"customer_id": ["C1", "C1", "C2", "C2"], "product_id": ["P1", "P2", "P1", "P2"], "stars": ["1", "5", "4", "2"],
                       "created_at": [str(1_700_000_000 + k) for k in range(4)]})

    def catalogue(*columns: str) -> pl.DataFrame:
        return pl.DataFrame({c: ["P1", "P2"] if k == 0 else [f"{c} 1", f"{c} 2"] for k, c in enumerate(columns)})

    with pytest.raises(ConfigError, match=r"the items file has no column 'product_id' nor one that looks like an item id .*--items-item-col NAME"):
        guess(ev, catalogue("code", "item_description", "title"))
    g = guess(ev, catalogue("product_code", "product_title"))
    assert (g.items["item_id"].column, g.items["title"].column) == ("product_code", "product_title")
    g = guess(ev, catalogue("product_code", "title", "product_category"))
    assert (g.items["item_id"].column, g.items["title"].column, g.items["category"].column) == ("product_code", "title", "product_category")


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_a_csv_separated_otherwise_is_read_like_the_comma_one(tmp_path: Path, sep: str) -> None:
    """Spreadsheet exports with a decimal comma write ';' (and a byte-order mark); others tabs or pipes:
    ``init``, the loader and the streaming scan detect the separator from the header and read the
    same events as from the comma file."""
    from conrec.data.engine.scan import scan_table

    ev, it = _unusual_files(tmp_path)
    other = tmp_path / "ratings_other.csv"
    other.write_text(ev.read_text().replace(",", sep), encoding="utf-8-sig")
    _, comma = init_config(ev, it, tmp_path / "comma.yaml", preset="tiny")
    out, g = init_config(other, it, tmp_path / "other.yaml", preset="tiny")
    assert g.columns() == comma.columns() and (g.ts_unit, g.rating_range) == (comma.ts_unit, comma.rating_range)
    want, _ = load_source(load_config(tmp_path / "comma.yaml").data)
    cfg = load_config(out)
    got, _ = load_source(cfg.data)
    assert got.equals(want)
    streamed = scan_table(cfg.data.model_copy(update={"streaming": "on"})).collect()
    assert streamed.sort("user_id", "ts", "item_id").equals(scan_table(load_config(tmp_path / "comma.yaml").data).collect().sort("user_id", "ts", "item_id"))


def test_a_file_that_is_not_utf8_is_named_with_the_line_and_the_fix(tmp_path: Path) -> None:
    """A Latin-1 export (an accented title): polars said only 'invalid utf-8 sequence'."""
    ev, it = _unusual_files(tmp_path)
    latin = tmp_path / "movies_latin1.csv"
    latin.write_bytes(it.read_text().replace("Movie 3,", "Café 3,").encode("latin-1"))
    want = r"items file .*movies_latin1.csv is not UTF-8 \(byte 0xe9 on line 5\); re-save it as UTF-8, e.g. iconv"
    with pytest.raises(DataValidationError, match=want):
        init_config(ev, latin, tmp_path / "my.yaml", preset="tiny")
    out, _ = init_config(ev, it, tmp_path / "my.yaml", preset="tiny")
    cfg = load_config(out)
    with pytest.raises(DataValidationError, match=want):
        load_source(cfg.data.model_copy(update={"items_path": latin}))


@pytest.mark.parametrize(("encoding", "name"), [("utf-16", "UTF-16 LE"), ("utf-16-le", "UTF-16 LE"), ("utf-16-be", "UTF-16 BE")])
def test_a_utf16_file_is_named_with_its_encoding_and_the_fix(tmp_path: Path, encoding: str, name: str) -> None:
    """Excel's "Unicode Text" (UTF-16, a byte-order mark or none): read as UTF-8, every name and value carried NULs,
    and init refused a time column named '\x00t\x00i...' as unreadable times."""
    ev, it = _unusual_files(tmp_path)
    for path, what in ((ev, "events"), (it, "items")):
        (tmp_path / f"u16{path.suffix}").write_bytes(path.read_text().replace(",", "\t").encode(encoding))
        u16 = tmp_path / f"u16_{what}.tsv"
        (tmp_path / f"u16{path.suffix}").rename(u16)
        want = rf"{what} file .*u16_{what}.tsv is {name}, not UTF-8 .*iconv -f UTF-16 -t UTF-8"
        with pytest.raises(DataValidationError, match=want):
            init_config(u16 if what == "events" else ev, u16 if what == "items" else None, tmp_path / "my.yaml", preset="tiny")
        cfg = load_config(None, {"data": {"source": "table", "events_path": str(u16 if what == "events" else ev),
                                          **({"items_path": str(u16)} if what == "items" else {})}}).data
        with pytest.raises(DataValidationError, match=want):
            load_source(cfg)
        if what == "events":
            with pytest.raises(DataValidationError, match=want):
                scan_table(cfg.model_copy(update={"streaming": "on"}))


def test_a_semicolon_export_with_decimal_commas_reads_its_half_stars(tmp_path: Path) -> None:
    """A decimal-comma locale writes ';'-separated files with ratings like 2,5: read as 2.5 by init,
    the loader and the streaming scan (before, init refused the rating column as not numeric)."""
    from conrec.data.engine.scan import scan_table

    ev, it = _unusual_files(tmp_path)
    eu = tmp_path / "ratings_eu.csv"
    eu.write_text("\n".join(line.replace(",", ";").replace(".", ",") for line in ev.read_text().splitlines()) + "\n")
    _, comma = init_config(ev, it, tmp_path / "comma.yaml", preset="tiny")
    out, g = init_config(eu, it, tmp_path / "eu.yaml", preset="tiny")
    assert (g.rating_range, g.dislike_max_rating, g.like_min_rating) == (comma.rating_range, comma.dislike_max_rating, comma.like_min_rating)
    want, _ = load_source(load_config(tmp_path / "comma.yaml").data)
    cfg = load_config(out)
    got, _ = load_source(cfg.data)
    assert got.equals(want)
    cols = ["user_id", "item_id", "ts", "feedback"]
    streamed = scan_table(cfg.data.model_copy(update={"streaming": "on"})).collect().select(cols)
    assert streamed.with_columns(pl.col("feedback").cast(pl.Int8)).sort(cols).equals(want.select(cols).sort(cols))


@pytest.mark.parametrize(("name", "source"), [("ratings.dat", "movielens"), ("reviews.jsonl.gz", "amazon")])
def test_a_known_export_of_another_format_is_pointed_to_its_source(tmp_path: Path, name: str, source: str) -> None:
    from conrec.errors import DataValidationError

    path = tmp_path / name
    path.write_bytes(b"1::1193::5::978300760\n")
    with pytest.raises(DataValidationError, match=rf"unsupported format .*read by data.source: {source}"):
        init_config(path, None, tmp_path / "my.yaml")


def _dated(times: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"user": [f"u{k % 3}" for k in range(len(times))], "item": [f"i{k}" for k in range(len(times))],
                         "ts": times, "feedback": ["-1", "1"] * (len(times) // 2) + ["1"] * (len(times) % 2)})


def test_dates_in_a_layout_init_does_not_know_name_the_time_format_flag() -> None:
    """``Dec 25, 2023`` was refused with "pass --time-col NAME", which cannot help: the column is the
    time; one strftime layout (--time-format) reads it."""
    ev = _dated(["Dec 25, 2023", "Jan 02, 2024", "Feb 10, 2024"])
    with pytest.raises(ConfigError, match=r"time column 'ts': .*pass --time-format '<strftime layout>' \(e\.g\. '%b %d, %Y'"):
        guess(ev)
    assert guess(ev, ts_format="%b %d, %Y").ts_format == "%b %d, %Y"
    with pytest.raises(ConfigError, match=r"--time-format '%d\.%m\.%Y' reads none of its values"):
        guess(ev, ts_format="%d.%m.%Y")


def test_dates_written_as_eight_digits_are_dates_not_epoch_seconds(tmp_path: Path) -> None:
    """``20231225`` was taken for epoch seconds (23 August 1970): two months of a log became hours.
    Init proposes ts_format '%Y%m%d', which every loader applies to an integer column (CSV and Parquet)."""
    days = [20231225, 20240101, 20240131, 20240215] * 5
    ev = pl.DataFrame({"user": [f"u{k % 4}" for k in range(20)], "item": [f"i{k}" for k in range(20)],
                       "date": days, "rating": [1, 5, 4, 2, 5] * 4})
    g = guess(ev)
    assert (g.ts_unit, g.ts_format) == ("auto", "%Y%m%d") and "dates written as digits" in g.ts_reason
    assert guess(ev.with_columns(date=pl.col("date") + 40)).ts_format is None  # 20231265: not all dates, epoch seconds
    want = sorted(int(dt.datetime.strptime(str(d), "%Y%m%d").replace(tzinfo=dt.timezone.utc).timestamp()) for d in days)
    for suffix in (".csv", ".parquet"):
        path = tmp_path / f"events{suffix}"
        ev.write_csv(path) if suffix == ".csv" else ev.write_parquet(path)
        out, _ = init_config(path, None, tmp_path / f"my{suffix}.yaml", preset="tiny")
        cfg = load_config(out)
        assert cfg.data.ts_format == "%Y%m%d"
        events, _ = load_source(cfg.data)
        assert sorted(events["ts"].to_list()) == want, suffix
        assert sorted(scan_table(cfg.data.model_copy(update={"streaming": "on"})).collect()["ts"].to_list()) == want, suffix


def test_epoch_microseconds_are_labelled_as_such() -> None:
    """16 digits were labelled milliseconds (``ts_unit: ms``): every time then lay beyond the year 9999."""
    ev = _dated(["1703528010000000", "1704067200000000"])
    assert guess(ev).ts_unit == "us" and "epoch microseconds" in guess(ev).ts_reason
    assert guess(ev.with_columns(ts=pl.Series(["1703528010000", "1704067200000"]))).ts_unit == "ms"


def test_a_feedback_column_of_unknown_words_gets_every_word_listed_to_mark(tmp_path: Path) -> None:
    """German actions (``gefällt mir``, ``ausblenden``) could not be set up: without a flag init said
    pass --rating-col, and with ``--rating-col aktion`` that the column is not numeric, pass --rating-col.
    Every word is now listed in feedback_labels as neutral, with a warning to mark them."""
    words = ["gefällt mir", "ausblenden", "angesehen", "nicht interessiert"]
    ev = tmp_path / "events.csv"
    ev.write_text("user,item,ts,aktion\n" + "".join(f"u{k % 5},i{k % 9},{1_700_000_000 + k},{words[k % 4]}\n" for k in range(40)))
    for given in (None, {"rating": "aktion"}):
        g = guess(pl.read_csv(ev), given=given)
        assert g.events["feedback"].column == "aktion" and g.rating_range is None
        assert g.feedback_labels == {"angesehen": 0, "ausblenden": 0, "gefällt_mir": 0, "nicht_interessiert": 0}
        assert "no value of 'aktion' is a known dislike word" in g.labels_warning and "mark the dislike words -1" in g.labels_warning
    out, _ = init_config(ev, None, tmp_path / "my.yaml", preset="tiny")
    assert "# WARNING: no value of 'aktion' is a known dislike word" in out.read_text()
    marked = re.sub(r'(mir"?): 0', r"\1: 1", out.read_text().replace("ausblenden: 0", "ausblenden: -1"))
    out.write_text(marked)
    events, _ = load_source(load_config(out).data)
    assert set(events["feedback"].unique()) == {-1, 1} and events.height == 20
    with pytest.raises(ConfigError, match=r"\['device', 'aktion'\] all hold words; pass --rating-col NAME"):
        guess(pl.read_csv(ev).with_columns(device=pl.Series(["ios", "android"] * 20)).select("user", "item", "ts", "device", "aktion"))


def test_non_ascii_names_are_written_as_themselves(tmp_path: Path) -> None:
    """Chinese column names and German words were written as "\\u7528..." escapes in the proposed YAML."""
    ev = tmp_path / "events.csv"
    ev.write_text("用户ID,物品ID,时间,aktion\n" + "".join(f"u{k % 5},i{k % 9},{1_700_000_000 + k},{['gefällt mir', 'hide'][k % 2]}\n" for k in range(20)),
                  encoding="utf-8")
    out, _ = init_config(ev, None, tmp_path / "my.yaml", preset="tiny", given={"user_id": "用户ID", "item_id": "物品ID", "ts": "时间"})
    text = out.read_text(encoding="utf-8")
    assert "    用户ID: user_id" in text and "    gefällt_mir: 0" in text and "\\u" not in text and "\\x" not in text
    assert load_config(out).data.columns["用户ID"] == "user_id"


def test_a_few_ratings_far_beyond_the_scale_are_named_and_the_proposal_kept() -> None:
    """Ten 7s among 2,010 ratings on a 1..5 scale moved the proposed rating_range to [1, 7] and the dislike
    threshold from 2 to 3, silently. The proposal stays (the 7s may be real); a warning names them."""
    ratings = [str(1 + k % 5) for k in range(2000)] + ["7"] * 10
    ev = pl.DataFrame({"user": [f"u{k % 9}" for k in range(2010)], "item": [f"i{k}" for k in range(2010)],
                       "ts": [str(1_700_000_000 + k) for k in range(2010)], "rating": ratings})
    g = guess(ev)
    assert (g.rating_range, g.dislike_max_rating) == ((1.0, 7.0), 3.0)
    assert g.outlier_warning == ("10 of the 2,010 sampled ratings lie beyond the 1..5 the rest span: 7 (10x); if they are errors, "
                                 "set rating_range: [1, 5] to drop them, and for that scale dislike_max_rating: 2, like_min_rating: 2.01")
    assert any(line.endswith(g.outlier_warning) for line in summary_lines(g))
    rare_top = [str(1 + k % 4) for k in range(2000)] + ["5"] * 10  # one step past the rest: the scale's own
    half_stars = [str(HALF_STARS[1 + k % 9]) for k in range(2000)] + ["0.5"] * 10
    for values in (rare_top, half_stars):
        assert guess(ev.with_columns(rating=pl.Series(values))).outlier_warning == ""
    assert "0.5 (10x)" in guess(ev.with_columns(rating=pl.Series(ratings[:2000] + ["0.5"] * 10))).outlier_warning  # off the whole-star grid
    # a rating column named "count" clashed with value_counts' own column (a polars DuplicateError traceback)
    assert "7 (10x)" in guess(ev.rename({"rating": "count"}), None, {"rating": "count"}).outlier_warning


def test_a_few_zeros_below_a_scale_that_starts_at_half_a_star_or_one_are_no_rating() -> None:
    """Ten 0s ("no rating", as Book-Crossing codes it) among 2,000 ratings counted as the scale's own value one step
    below the rest: the proposal became 0..5 with <= 1.5 (half stars), <= 1 (whole stars 1..5) or <= 3 (1..10), silently.
    The proposal is now the rest's, and a warning names the 0s and what to write if 0 is a rating."""
    ev = pl.DataFrame({"user": [f"u{k % 9}" for k in range(2010)], "item": [f"i{k}" for k in range(2010)],
                       "ts": [str(1_700_000_000 + k) for k in range(2010)]})
    scales = {"half stars": ([HALF_STARS[k % 10] for k in range(2000)], (0.5, 5.0), 2.0, 1.5),
              "1..5": ([1 + k % 5 for k in range(2000)], (1.0, 5.0), 2.0, 1.0),
              "1..10": ([1 + k % 10 for k in range(2000)], (1.0, 10.0), 4.0, 3.0)}
    for name, (ratings, scale, dislike, with_zero) in scales.items():
        g = guess(ev.with_columns(rating=pl.Series([str(r) for r in ratings] + ["0"] * 10)))
        assert (g.rating_range, g.dislike_max_rating, g.like_min_rating) == (scale, dislike, dislike + 0.01), name
        assert g.outlier_warning.startswith(f"10 of the 2,010 sampled ratings (0.5%) are 0, below the {scale[0]:g}..{scale[1]:g} the rest span"), name
        assert f"if 0 is a rating, set rating_range: [0, {scale[1]:g}], and for that scale dislike_max_rating: {with_zero:g}" in g.outlier_warning
        assert g.rating_warning == "", name
    # a 0..10 scale cannot be told by its values from 0s below 1..10: read so too, never silently (the warning says how to keep 0)
    zero_to_ten = guess(ev.with_columns(rating=pl.Series([str(k % 11) for k in range(2010)])))
    assert zero_to_ten.rating_range == (1.0, 10.0) and "if 0 is a rating, set rating_range: [0, 10]" in zero_to_ten.outlier_warning
    # a rare value one step above the rest is left as it was
    rare_top = guess(ev.with_columns(rating=pl.Series([str(1 + k % 4) for k in range(2000)] + ["5"] * 10)))
    assert (rare_top.rating_range, rare_top.outlier_warning) == ((1.0, 5.0), "")
    # 0s and a typo far above: both named, the 0s taken out, the 7s left to the user
    both = guess(ev.with_columns(rating=pl.Series([str(1 + k % 5) for k in range(1990)] + ["0"] * 10 + ["7"] * 10)))
    assert both.rating_range == (1.0, 7.0) and "are 0, below the 1..7" in both.outlier_warning and "7 (10x)" in both.outlier_warning


def test_a_share_of_minus_ones_below_one_to_ten_is_no_rating() -> None:
    """An anime log's -1 ("watched, not rated") at 20% below 1..10 made the proposal -1..10 with <= 2, so every unrated
    view was a dislike, silently (under a majority the "mostly dislikes" warning is quiet)."""
    n = 2000
    ev = pl.DataFrame({"user": [f"u{k % 50}" for k in range(n)], "item": [f"i{k % 97}" for k in range(n)],
                       "ts": [str(1_700_000_000 + k) for k in range(n)],
                       "rating": ["-1"] * 400 + [str(1 + k % 10) for k in range(n - 400)]})
    g = guess(ev)
    assert (g.rating_range, g.dislike_max_rating, g.like_min_rating, g.rating_warning) == ((1.0, 10.0), 4.0, 4.01, "")
    assert g.outlier_warning.startswith("400 of the 2,000 sampled ratings (20.0%) are -1, below the 1..10 the rest span")


@pytest.mark.parametrize(("share", "shown"), [(0.005, "0.5%"), (0.01, "1.0%"), (0.05, "5.0%"), (0.2, "20.0%"), (0.6, "60.0%")])
def test_zeros_below_a_scale_that_starts_at_one_are_no_rating_at_any_share(share: float, shown: str) -> None:
    """From 1% of 0s below 1..5 stars (the rare-0 rule stopped there) to 20%, the proposal became rating_range [0, 5] with
    <= 1 a dislike, so 2-star ratings became positives, and nothing warned: a 0 one step below the rest passed as the
    scale's own, and the "mostly dislikes" warning starts only at a majority (Book-Crossing's 62%). At every share the
    0s are now "no rating": the rest's scale, and one warning naming the count, the share and the settings that keep 0."""
    n = 2000
    zeros = round(n * share)
    ev = pl.DataFrame({"user": [f"u{k % 50}" for k in range(n)], "item": [f"i{k % 97}" for k in range(n)],
                       "ts": [str(1_700_000_000 + k) for k in range(n)],
                       "rating": ["0"] * zeros + [str(1 + k % 5) for k in range(n - zeros)]})
    g = guess(ev)
    assert (g.rating_range, g.dislike_max_rating, g.like_min_rating, g.rating_warning) == ((1.0, 5.0), 2.0, 2.01, "")
    assert g.outlier_warning.startswith(f"{zeros:,} of the 2,000 sampled ratings ({shown}) are 0, below the 1..5 the rest span")
    assert "if 0 is a rating, set rating_range: [0, 5], and for that scale dislike_max_rating: 1, like_min_rating: 1.01" in g.outlier_warning
    assert g.outlier_warning.endswith("would be dislikes, usually a minority)") == (share == 0.6)


def test_zero_beside_one_or_two_values_is_a_rating() -> None:
    """0 beside one value is a flag's dislike (0/1, 0/5), beside two the low end of a three-point label (0/1/2, 0/0.5/1):
    at any share it stays in the scale, its dislike, not "no rating" (which would leave no dislike at all)."""
    for values, top in (([0, 1], 1.0), ([0, 5], 5.0), ([0, 1, 2], 2.0), ([0, 0.5, 1], 1.0)):
        for zeros in (10, 400):
            ratings = [0.0] * zeros + [float(v) for v in values[1:]] * 1000
            ev = pl.DataFrame({"user": ["u"] * len(ratings), "item": ["i"] * len(ratings), "ts": ["1"] * len(ratings),
                               "stars": [f"{r:g}" for r in ratings]})
            g = guess(ev)
            assert (g.rating_range, g.dislike_max_rating, g.outlier_warning) == ((0.0, top), 0.0, ""), (values, zeros)


def test_init_refuses_an_out_path_that_is_a_directory_even_with_force(tmp_path: Path) -> None:
    """`conrec init events.csv -o DIR --force` replaced DIR, contents and all, by the config file."""
    ev = tmp_path / "events.csv"
    ev.write_text("user_id,item_id,ts,rating\n" + "".join(f"u{k % 5},i{k % 9},{1_700_000_000 + k},{1 + k % 5}\n" for k in range(40)))
    keep = tmp_path / "configs"
    keep.mkdir()
    (keep / "other.yaml").write_text("keep")
    for force in (False, True):
        with pytest.raises(ConfigError, match="is a directory; give a file path"):
            init_config(ev, None, keep, preset="tiny", force=force)
    assert (keep / "other.yaml").read_text() == "keep"
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        init_config(ev, None, ev / "x.yaml", preset="tiny")


def test_a_time_layout_that_reads_few_of_the_sampled_values_is_refused_with_an_unreadable_example() -> None:
    """298 ``Dec 22, 2023`` and 2 ISO dates: init wrote ts_format '%Y-%m-%d' (it read the 2) and conrec data dropped
    298 of 300 rows; ISO times two thirds with ``Z``: the example printed was one the chosen layout cannot read."""
    ev = _dated(["Dec 22, 2023"] * 298 + ["2023-11-24", "2023-11-25"])
    with pytest.raises(ConfigError, match=r"'%Y-%m-%d', reads only 2 of the 300 .*99% \(like 'Dec 22, 2023'\).*--time-format"):
        guess(ev)
    g = guess(ev, ts_format="%b %d, %Y")  # the flag settles it; the 2 others are named as dropped
    assert g.ts_reason.startswith("values like 'Dec 22, 2023'") and "2 of the 300 sampled values (like '2023-11-24')" in g.ts_reason
    iso = _dated(["2023-12-22T07:54:31", "2023-12-10T01:32:31Z", "2023-12-11T01:32:31Z"] * 10)
    with pytest.raises(ConfigError, match=r"reads only 20 of the 30 .*like '2023-12-22T07:54:31'"):
        guess(iso)
    g = guess(iso, ts_format="%Y-%m-%dT%H:%M:%S%.fZ")
    assert g.ts_reason.startswith("values like '2023-12-10T01:32:31Z'")  # an example the layout reads
    assert guess(_dated(["2023-12-22"] * 199 + ["n/a"])).ts_format == "%Y-%m-%d"  # a stray n/a is dropped, counted
    # found in review: placeholders are missing times whatever their share, not "another layout" (5% n/a was refused)
    g = guess(_dated(["2023-12-22"] * 90 + ["n/a", "NULL", "-", "n/a", "none"] * 2))
    assert g.ts_format == "%Y-%m-%d" and "10 of the 100 sampled values (like 'n/a')" in g.ts_reason


def test_ratings_off_the_sampled_steps_are_positives_and_neutral_ones_are_counted(tmp_path: Path) -> None:
    """10,000 whole stars then half stars: init proposed like_min_rating 3 (the next sampled step), so every 2.5 fell
    between the thresholds and vanished, counted nowhere. Now everything above the dislike threshold is a positive,
    and ratings a user's own thresholds leave neutral are counted (neutral_rating)."""
    whole = [f"u{k % 9},i{k % 13},{1_600_000_000 + 60 * k},{1 + k % 5}" for k in range(200)]
    half = [f"u{k % 9},i{k % 13},{1_700_000_000 + 60 * k},{1.5 + k % 4}" for k in range(40)]  # 1.5, 2.5, 3.5, 4.5
    path = tmp_path / "events.csv"
    path.write_text("user,item,ts,rating\n" + "\n".join(whole + half) + "\n")
    from conrec.data.guess import read_sample

    g = guess(read_sample(path, "events", n_rows=200))
    assert (g.dislike_max_rating, g.like_min_rating) == (2.0, 2.01) and "anything above it" in g.rating_reason
    data = {"source": "table", "events_path": str(path), "columns": {"user": "user_id", "item": "item_id"},
            "rating_range": [1, 5], "dislike_max_rating": g.dislike_max_rating, "like_min_rating": g.like_min_rating}
    log = RepairLog("drop")
    events, _ = load_source(load_config(None, {"data": data}).data, log)
    assert events.height == 240 and log.counts == {}
    for streaming in ("off", "on"):
        cfg = load_config(None, {"run_dir": str(tmp_path / f"run_{streaming}"), "data": {**data, "like_min_rating": 3, "streaming": streaming}})
        from rich.console import Console

        from conrec.data import stage

        stats = stage.run(cfg.data, cfg.run_dir, console=Console(quiet=True))
        assert stats["invalid_rows"] == {"policy": "drop", "neutral_rating": 10}, streaming  # the ten 2.5s


def test_epoch_units_are_told_by_their_typical_size_and_named_when_wrong(tmp_path: Path) -> None:
    """Milliseconds with a few 0 placeholders were guessed as seconds (conrec data then refused every time beyond the
    year 9999, suggesting "milliseconds or microseconds?"); nanoseconds were labelled microseconds; fractional epoch
    seconds were written as ts_unit s and then refused by conrec data, whole file, even under on_invalid: drop;
    Excel serial days (45037) were read as seconds of 1970-01-01 without a word."""
    ms = _dated(["0", "1702171951000", "1702544371000", "0", "1703231671000"])
    g = guess(ms)
    assert g.ts_unit == "ms" and "values like '1702171951000'" in g.ts_reason and "2 sampled value(s) of 0" in g.ts_reason
    with pytest.raises(ConfigError, match=r"values like '1703231671000000123' are epoch nanoseconds.*divide by 1,000"):
        guess(_dated(["1703231671000000123", "1702171951000000123"]))
    frac = _dated(["1703231671.25", "1702171951", "1702544371.5"])
    assert guess(frac).ts_unit == "s" and "fractions of a second are floored" in guess(frac).ts_reason
    excel = guess(_dated(["45037", "45025", "45029"]))
    assert excel.ts_unit == "s" and "Excel serial dates" in excel.ts_reason and "2023-04-21" in excel.ts_reason
    assert "Excel" not in guess(_dated(["1703231671", "1702171951"])).ts_reason
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,ts,feedback\n" + "".join(f"u{k % 3},i{k},{1_700_000_000 + k}.5,{-1 if k % 3 else 1}\n" for k in range(30)))
    events, _ = load_source(load_config(None, {"data": {"source": "table", "events_path": str(path), "ts_unit": "s"}}).data, RepairLog("drop"))
    assert sorted(events["ts"].to_list()) == [1_700_000_000 + k for k in range(30)]  # floored, as ms and us are
    for unit, values, hint in (("s", "1700000000000", "ts_unit: ms"), ("ms", "1700000000000000", "ts_unit: us"),
                               ("us", "1700000000000000000", "nanoseconds")):
        path.write_text("user_id,item_id,ts,feedback\n" + "".join(f"u{k % 3},i{k},{values},{-1 if k % 3 else 1}\n" for k in range(30)))
        cfg = load_config(None, {"data": {"source": "table", "events_path": str(path), "ts_unit": unit}}).data
        with pytest.raises(DataValidationError, match=f"beyond year 9999 read with data.ts_unit: {unit} .*{hint}"):
            load_source(cfg, RepairLog("drop"))
        with pytest.raises(DataValidationError, match=f"beyond year 9999 read with data.ts_unit: {unit} .*{hint}"):
            from rich.console import Console

            from conrec.data import stage

            stage.run(cfg.model_copy(update={"streaming": "on"}), tmp_path / f"run_{unit}", console=Console(quiet=True))


def test_epoch_times_in_two_units_are_refused_naming_each_units_count_and_an_example() -> None:
    """A log whose logger moved from seconds to milliseconds was guessed as ms from the median, with a seconds value
    as the example, and conrec data then kept the seconds rows as silent January-1970 events."""
    seconds = [str(1_600_000_000 + 3_600 * k) for k in range(40)]
    millis = [str((1_610_000_000 + 3_600 * k) * 1_000) for k in range(60)]
    for times in (seconds + millis, millis + seconds):
        with pytest.raises(ConfigError, match=r"time column 'ts' mixes epoch units: 40 value\(s\) look like epoch seconds \(e.g. "
                           r"'1600000000'\) and 60 value\(s\) look like epoch milliseconds \(e.g. '1610000000000'\).*the seconds times 1,000"):
            guess(_dated(times))
    assert guess(_dated(["0", "5", *millis])).ts_unit == "ms"  # placeholders below 1e8 tell no unit: not a mix
    assert guess(_dated([str(k) for k in range(0, 10_000_000, 100_000)])).ts_unit == "s"  # a clock that starts at 0


def test_the_rating_scale_and_feedback_labels_come_from_the_whole_column_not_the_first_rows(tmp_path: Path) -> None:
    """A time-sorted file with whole stars in its first 10,000 rows and half stars after got rating_range [1, 5], and a
    feedback word first logged after them (a new not_interested button) no label: conrec data dropped those rows, the
    strongest dislikes of the test period, as out of range."""
    n = 10_050
    stars = tmp_path / "stars.csv"
    stars.write_text("user,item,rating,ts\n" + "".join(
        f"u{k % 40},i{k % 30},{(1 + k % 5) if k < 10_000 else 0.5 * (1 + k % 10)},{1_600_000_000 + k}\n" for k in range(n)))
    _, g = init_config(stars, None, tmp_path / "stars.yaml")
    assert g.rating_range == (0.5, 5.0) and g.dislike_max_rating == 2.0 and "0.5..5 in steps of 0.5" in g.rating_reason
    words = tmp_path / "words.csv"
    words.write_text("user,item,action,ts\n" + "".join(
        f"u{k % 40},i{k % 30},{('thumbs_down', 'like', 'view')[k % 3] if k < 10_000 else 'not_interested'},{1_600_000_000 + k}\n"
        for k in range(n)))
    _, g = init_config(words, None, tmp_path / "words.yaml")
    assert g.feedback_labels == {"like": 1, "not_interested": -1, "thumbs_down": -1, "view": 1}
    pq = tmp_path / "words.parquet"
    pl.read_csv(words).write_parquet(pq)
    assert init_config(pq, None, tmp_path / "pq.yaml")[1].feedback_labels == g.feedback_labels


def test_a_log_of_implicit_interactions_is_told_it_holds_no_dislike(tmp_path: Path) -> None:
    """A view log (``action`` = ``view`` throughout) was refused as holding "more than 50 distinct words" with
    --rating-col action, and as having no feedback column without it; a log of views, clicks and purchases got the
    warning that no value is a known dislike word, and conrec data then named dislike_max_rating, which it has not."""
    views = pl.DataFrame({"user": ["u1", "u2"] * 5, "item": [f"i{k}" for k in range(10)], "action": ["view"] * 10,
                          "ts": [str(1_700_000_000 + k) for k in range(10)]})
    one_word = r"column 'action' holds only 'view', a usual word for a positive.*conrec learns from explicit negative feedback"
    with pytest.raises(ConfigError, match=one_word):
        guess(views)
    with pytest.raises(ConfigError, match=one_word):
        guess(views, given={"rating": "action"})
    flags = views.with_columns(rating=pl.Series(["yes", "no"] * 5)).drop("action")
    with pytest.raises(ConfigError, match=r"holds the words \['no', 'yes'\], which no word list reads as -1/0/\+1"):
        guess(flags, given={"rating": "rating"})
    implicit = views.with_columns(action=pl.Series(["view", "click", "add_to_cart", "purchase", "view"] * 2))
    g = guess(implicit)
    assert g.feedback_labels == {"add_to_cart": 1, "click": 1, "purchase": 1, "view": 1}
    assert "every value of 'action' is a usual word for a positive or for no reaction" in g.labels_warning
    path = tmp_path / "events.csv"
    implicit.write_csv(path)
    init_config(path, None, tmp_path / "implicit.yaml")
    cfg = load_config(tmp_path / "implicit.yaml")
    from rich.console import Console

    from conrec.data import stage

    with pytest.raises(DataValidationError, match=r"none of the 10 events is a dislike \(feedback -1\); check data.feedback_labels"):
        stage.run(cfg.data, tmp_path / "run", console=Console(quiet=True))


def test_init_suggests_a_yaml_name_inside_a_directory_given_as_out(tmp_path: Path) -> None:
    """`conrec init ... -o DIR` suggested DIR/out.parquet for the YAML config it writes."""
    ev = tmp_path / "events.csv"
    ev.write_text("user_id,item_id,ts,rating\n" + "".join(f"u{k % 5},i{k % 9},{1_700_000_000 + k},{1 + k % 5}\n" for k in range(40)))
    with pytest.raises(ConfigError) as err:
        init_config(ev, None, tmp_path, preset="tiny")
    assert f"(e.g. {tmp_path / 'my.yaml'})" in str(err.value) and "parquet" not in str(err.value)
