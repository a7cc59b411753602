"""The language model, by role.

* :mod:`conrec.llm.model`: the LM itself: backbone presets and loading, the SID vocabulary inside
  its tokenizer and embeddings, precision, model files and checkpoints;
* :mod:`conrec.llm.training`: training it: the SFT tasks (history prompts, the dense timeline,
  alignment, discernment), losses, early stopping, GRPO with its rewards and rollouts;
* :mod:`conrec.llm.inference`: using it: prompt layouts, constrained and exhaustive search, slate
  scoring, prediction.

Dependencies run one way, model <- inference <- training (training measures itself with inference;
neither model nor inference imports training), and
:mod:`conrec.llm.config` holds every section's settings.
"""
