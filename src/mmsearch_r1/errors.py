"""Errors a user can hit. The CLI prints their message (one sentence: the thing and the fix), no traceback."""


class MMSearchError(Exception):
    """Base class of every error the project raises on purpose."""


class ConfigError(MMSearchError):
    """A configuration key or value is wrong."""


class DataError(MMSearchError):
    """An input file or row is malformed."""


class RewardError(MMSearchError):
    """The reward cannot be computed from what it was given (never silently scored 0)."""


class ToolError(MMSearchError):
    """A search tool failed. Rollout turns it into a feedback message and counts it."""


class ToolTimeout(ToolError):
    """The backend did not answer in time."""


class ToolRateLimited(ToolError):
    """The backend refused the call because of its rate limit (HTTP 429 or our own limiter)."""


class ToolBadResponse(ToolError):
    """The backend answered with something we cannot read (bad status, malformed JSON, oversized body)."""


class ToolRefusedTarget(ToolError):
    """A fetch target was refused: not http(s), or a private, loopback or link-local address."""


class CacheMiss(ToolError):
    """The cache is in replay mode and holds no entry for this call (a live call is never made instead)."""
