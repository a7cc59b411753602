"""Evaluation points ("samples"): the contract between the data stage and every model.

``samples.parquet`` has one row per evaluation point:

============== ============ ===============================================================
column         dtype        meaning
============== ============ ===============================================================
sample_id      Int64        unique row id
user_id        String
split          String       "train" | "valid" | "test"
ts             Int64        evaluation time t (the next negative's timestamp)
hist_items     List[String] events before the point's event, oldest first (at most max_history; an event at the same
                            second that comes earlier in the input is before it: see the order below)
hist_feedback  List[Int8]   feedback of hist_items (-1 / +1), aligned
hist_ts        List[Int64]  timestamps of hist_items, aligned (recency-limited prompts)
next_neg       String       the next disliked item (the conventional target)
future_negs    List[String] items disliked from the point's event on (itself included; a same-second dislike earlier
                            in the input is history) until t + N days, end excluded, N = horizon_days; includes next_neg
later_negs     List[String] the same until t + max_horizon_days, oldest first
later_neg_ts   List[Int64]  their timestamps (so any horizon <= max_horizon_days is derivable)
future_pos     List[String] items given positive feedback after the point's event in the order below (a positive at
                            the same second t that comes later in the input is included, an earlier one is history)
                            and before min(t + N days, label cut-off), cut like future_negs: the future-positive
                            penalty of the similarity reward
hist_negatives Int64        the user's dislikes before the point, all of them (hist_items stops at max_history):
                            LUF's long-tail test (< 3 dislikes before t)
============== ============ ===============================================================

Every label list stops at the sample's label cut-off: train samples' at the valid cut-off (the test cut-off
with ``train_until="test"``; per user: the user's valid start, test start), valid samples' at the test cut-off
(the user's test start); test samples' run the full window. So train samples use only train-period events, and no label leaks from valid/test into training.

"Before" and "from" follow one order: a user's events by ``ts``, ties broken by input row order.
The history holds the events before the sample's negative in that order; the label lists hold
negatives from it on (itself included) inside the window. So an event is never both history and
label, even when timestamps tie. Built by :func:`conrec.data.splits.build_samples`.
"""

from __future__ import annotations

from conrec.data.windows import DAY, future_set

__all__ = ["DAY", "SAMPLE_COLUMNS", "future_set"]  # DAY and future_set: defined in windows.py, re-exported

SAMPLE_COLUMNS = (
    "sample_id",
    "user_id",
    "split",
    "ts",
    "hist_items",
    "hist_feedback",
    "hist_ts",
    "next_neg",
    "future_negs",
    "later_negs",
    "later_neg_ts",
    "future_pos",
    "hist_negatives",
)

