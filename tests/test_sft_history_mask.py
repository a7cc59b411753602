"""The SFT loss's history mask (sft.train.mask_history), checked by hand on a 12-token vocabulary."""

from __future__ import annotations

import torch

from conrec.llm.training.sft import history_code_mask

# tokens 0-2 text; level 0: 3, 4; level 1: 5, 6; level 2: 7, 8, 9
LEVELS = torch.tensor([-1, -1, -1, 0, 0, 1, 1, 2, 2, 2, -1, -1])


def _batch(target_last: int):
    # prompt shows items (3,5,7) and (3,5,8) and (4,6,7); completion = item (3,5,target_last)
    ids = torch.tensor([[0, 3, 5, 7, 3, 5, 8, 4, 6, 7, 1, 3, 5, target_last]])
    labels = torch.full_like(ids, -100)
    labels[0, -3:] = ids[0, -3:]
    target = labels[:, 2:]  # any trailing window that holds the supervised tokens
    return ids, labels, target


def test_last_level_target_drops_codes_of_items_already_shown_with_the_same_prefix():
    ids, labels, target = _batch(9)
    mask = history_code_mask(ids, labels, target, LEVELS, 12)
    last = target.shape[1] - 1  # the level-2 target (9) after prefix (3, 5)
    assert mask[0, last].nonzero().flatten().tolist() == [7, 8]  # (3,5,7) and (3,5,8) are shown; (4,6,7) has another prefix
    assert not mask[0, :last].any()  # level-0 and level-1 targets are never masked


def test_the_target_itself_is_never_masked():
    ids, labels, target = _batch(8)  # the answer (3,5,8) is also in the prompt (a repeated dislike)
    mask = history_code_mask(ids, labels, target, LEVELS, 12)
    assert mask[0, -1].nonzero().flatten().tolist() == [7]


def test_supervised_tokens_are_not_history():
    ids = torch.tensor([[0, 1, 3, 5, 9]])
    labels = torch.full_like(ids, -100)
    labels[0, -3:] = ids[0, -3:]
    assert not history_code_mask(ids, labels, labels[:, 1:], LEVELS, 12).any()
