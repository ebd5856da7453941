"""Teacher runners: plain code (no Django) that turns work items into results.

- `openai_runner`: the asyncio runner for OpenAI-compatible chat-completions endpoints.
- `ratelimit`: token buckets for requests- and tokens-per-minute limits.
- `retry`: which errors are retried, backoff with full jitter, `Retry-After` parsing.

The Django side that feeds a generation job to a runner lives with its app:
`distillapp.generation.runners`.
"""

from __future__ import annotations
