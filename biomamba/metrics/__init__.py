"""Metrics that must be right, on the library floor so that training and evaluation share them.

    classification.py   accuracy, macro-F1, weighted-F1, per-class report; mean and spread over seeds
    perplexity.py       token / word / byte perplexity and bits per byte (lm-eval-harness definitions)
    rolling.py          lm-eval's loglikelihood_rolling windows and their scoring (padding never scored)
    retrieval.py        nDCG@10, Recall@k, MRR@10 as trec_eval computes them; reciprocal rank fusion
"""
