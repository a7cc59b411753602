"""Evaluation of negative recommenders.

* :mod:`conrec.eval.metrics` — pure metrics (FHR@K, FRecall@K, HR@K, NDCG@K, coverage, invalid
  rate) and ``evaluate(predictions, samples, ks, n_items, horizon_days=None)``.
* :mod:`conrec.eval.baselines` — ``make_baseline(name, eval_cfg)`` -> a ``Recommender``
  (popularity, itemknn, category, sasrec) with ``fit(events, items)`` / ``recommend(samples, k)``.
* :mod:`conrec.eval.report` — ``write_report(run_dir, metrics, dataset_stats, extra_sections)``,
  ``render_table(metrics, ks)``.
* :mod:`conrec.eval.stage` — ``run(cfg, console)``: the ``conrec eval`` stage.

Nothing heavy is imported here, so ``import conrec.eval.metrics`` stays cheap.
"""
