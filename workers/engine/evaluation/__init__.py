"""Evaluation metrics and checks, Django-free: plain data in, plain numbers out.

- `reference`: exact, normalised (SQuAD-style), numeric match and chrF against a reference.
- `pairwise`: a pairwise LLM judge (both orders, position swap), win rates with a bootstrap CI.
- `length_control`: the length-controlled win rate (AlpacaEval 2 without instruction difficulty).
- `agreement`: judge–human agreement (Cohen's kappa, raw agreement).
- `refusal`: refusal and over-refusal rates (a documented phrase heuristic).
- `textstats`: length ratio against the teacher, format statistics.
- `perf`: latency percentiles, tokens/s, $ per 1k requests.
- `contamination`: 13-gram overlap between eval items and streamed training texts.

docs/evaluation.md defines every metric.
"""

from __future__ import annotations
