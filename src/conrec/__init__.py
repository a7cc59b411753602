"""conrec: learn what each user dislikes with a causal LM over semantic item IDs (CoNRec design).

Data flows one way: ``data`` -> ``sid`` -> ``llm`` -> ``eval`` / ``serve``. Every stage reads and
writes files in a run directory (see :mod:`conrec.runs`), so any stage can be rerun alone.
"""

__version__ = "0.1.0"
