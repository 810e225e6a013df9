"""Evaluation: the direct, RAG and on-demand workflows run over benchmark files, scored and reported.

- ``benchmarks``: loaders for FVQA (veRL Parquet), InfoSeek, MMSearch, SimpleVQA and LiveVQA files;
- ``run``: ``evaluate`` (resumable runs of every data set in every workflow, then ``report``);
- ``metrics``: accuracy, search ratios, correct-without-search, tool failures, latency, bootstrap intervals;
- ``judge``: an LLM judge behind an OpenAI-compatible endpoint, with cached verdicts;
- ``report`` and ``viewer``: results.json, results.md, plots and the static HTML trajectory viewer.

See ``docs/evaluation.md``.
"""

