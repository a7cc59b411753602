"""Evaluation of negative recommenders.

* :mod:`conrec.eval.metrics` — pure metrics and their registry (FHR@K = the paper's future hit
  ratio, FPrec@K, FRecall@K, HR@K, NDCG@K, LUF@K, LIF@K, coverage, invalid rate) and
  ``evaluate(predictions, samples, ks, n_items, horizon_days=None, train_dislike_counts=None)``.
* :mod:`conrec.eval.bootstrap` / :mod:`conrec.eval.compare` — percentile bootstrap CIs over
  evaluation points and paired differences against the best baseline.
* :mod:`conrec.eval.baselines` — ``REGISTRY`` / ``make_baseline(name, eval_cfg)`` -> a
  ``Recommender`` (popularity, itemknn, category, sasrec, ease, taste_exposure, swing, content,
  facet_rule) with
  ``fit(events, items)`` / ``recommend(samples, k)``.
* :mod:`conrec.eval.tuning` — each baseline's grid scored on the valid split.
* :mod:`conrec.eval.context_swap` — rank every point with another user's history.
* :mod:`conrec.eval.report` — ``write_report(run_dir, metrics, dataset_stats, extra_sections)``.
* :mod:`conrec.eval.summary` — ``summary_table(metrics, ks, slates)``: the 80-column terminal summary.
* :mod:`conrec.eval.stage` — ``run(cfg, console)``: the ``conrec eval`` stage.

Nothing heavy is imported here, so ``import conrec.eval.metrics`` stays cheap.
"""
