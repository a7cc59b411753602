"""The embedded default dataset, read from the installed recbole package (never copied)."""

from __future__ import annotations

import importlib.util

import polars as pl
import pytest

from conrec.data.sources import movielens100k
from conrec.errors import ConfigError

HAVE_RECBOLE = importlib.util.find_spec("recbole") is not None


@pytest.mark.skipif(not HAVE_RECBOLE, reason="recbole not installed: pip install --no-deps recbole==1.2.1 (it holds ML-100K)")
def test_movielens100k_loads_with_its_known_counts():
    events, items = movielens100k.load_movielens100k()
    assert items.height == 1682 and items["item_id"].is_unique().all()
    dislikes = events.filter(pl.col("feedback") == -1)
    assert dislikes.height == 17_480  # ratings 1-2
    assert events.height == 100_000 - 27_145  # ratings of 3 dropped
    assert dislikes["user_id"].n_unique() == 915
    toy = items.filter(pl.col("item_id") == "1").row(0, named=True)
    assert toy["title"] == "Toy Story (1995)" and toy["category"] == "Animation"
    assert toy["text"] == "Genres: Animation, Children's, Comedy. Released 1995."
    # Item 1412 has release year "V" in the file and its year inside the title: the title's year wins,
    # and it is not appended twice.
    odd = items.filter(pl.col("item_id") == "1412").row(0, named=True)
    assert odd["title"].endswith("Giving (1995)") and odd["text"].endswith("Released 1995.")


@pytest.mark.skipif(not HAVE_RECBOLE, reason="recbole not installed")
def test_thresholds_change_the_mapping():
    events, _ = movielens100k.load_movielens100k(dislike_max_rating=1, like_min_rating=5)
    assert 0 < (events["feedback"] == -1).sum() < 17_480


def test_missing_recbole_gives_the_install_command(monkeypatch):
    monkeypatch.setattr(movielens100k.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install --no-deps recbole==1\.2\.1"):
        movielens100k.load_movielens100k()
