"""A reward scored by a server over HTTP: the client side of the remote reward protocol.

The protocol (``POST /score``, ``GET /health``, PNG images, ``null`` = invalid) is described
in :mod:`unigrpo_kit.rewards.wire` and docs/reward_protocol.md; :mod:`.server` serves any
registered reward over it (``unigrpo-kit serve-reward``).
"""

from __future__ import annotations

import http.client
import json
import math
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from unigrpo_kit.registry import REWARDS
from unigrpo_kit.rewards.base import INPUTS, Reward, RewardOutput
from unigrpo_kit.rewards.wire import WireError, decode_response, encode_request

FAILED_METRIC = "reward/remote_failed"
MAX_BACKOFF_S = 10.0  # the longest single wait between two tries
# Transport failures: the server is down, unreachable, too slow, or hung up mid-answer.
TRANSPORT_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError)


@dataclass
class ChunkResult:
    """What one chunk's request came to: scores and metrics, or why it failed.

    ``server_down``: the failure was transport (no answer after every try), so the rest of the
    call's chunks are not sent."""

    scores: torch.Tensor | None = None
    metrics: dict[str, torch.Tensor] | None = None
    error: str | None = None
    server_down: bool = False


def check_url(url: Any) -> str:
    """``url`` as the base of ``/score`` and ``/health`` (a trailing ``/score`` dropped); a
    one-line ValueError naming ``reward.url`` unless it is ``http(s)://host[:port][/path]``."""
    hint = "an http(s) URL of a reward server such as http://127.0.0.1:8000"
    if not isinstance(url, str):
        raise ValueError(f"reward.url must be {hint}; got {type(url).__name__} {url!r}")
    try:
        parts = urllib.parse.urlsplit(url.strip())
        parts.port  # noqa: B018  (raises ValueError on a port that is not a number in range)
    except ValueError as error:
        raise ValueError(f"reward.url {url!r} must be {hint} ({error})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"reward.url {url!r} must be {hint}")
    if parts.query or parts.fragment:
        raise ValueError(f"reward.url {url!r} must be {hint}, without ?query or #fragment")
    path = parts.path.rstrip("/")
    path = path[: -len("/score")] if path.endswith("/score") else path
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _check_needs(needs: Any) -> frozenset[str]:
    needs = (needs,) if isinstance(needs, str) else tuple(needs or ())
    unknown = sorted(set(needs) - INPUTS)
    if unknown:
        raise ValueError(
            f"reward.needs {list(needs)!r} may hold only {sorted(INPUTS)}; got {unknown[0]!r}"
        )
    return frozenset(needs)


def _check_number(name: str, value: Any, minimum: float, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value >= minimum:
        what = "an int" if integer else "a number"
        raise ValueError(f"reward.{name} must be {what} >= {minimum}; got {value!r}")
    if not integer and not math.isfinite(value):
        raise ValueError(f"reward.{name} must be finite; got {value!r}")


def _first_line(error: BaseException) -> str:
    """``Type: first line`` of an error; for a URLError, of the socket error it wraps."""
    reason = getattr(error, "reason", None)
    if isinstance(error, urllib.error.URLError) and isinstance(reason, BaseException):
        error = reason
    text = str(error) or (str(reason) if reason else "")
    return f"{type(error).__name__}: {(text.strip().splitlines() or [''])[0]}"


@REWARDS.register_module()
class RemoteReward(Reward):
    """A reward computed by a server (``unigrpo-kit serve-reward`` or your own) over HTTP+JSON.

    Each call is split into chunks of ``batch_size`` episodes; each chunk is one
    ``POST {url}/score`` (images as 8-bit PNG, so the server sees them quantised to 1/255).
    Connection errors, timeouts and HTTP 5xx are retried ``retries`` times, waiting ``backoff``
    seconds before the second try and twice as long before each next one (at most 10 s); HTTP
    4xx is not retried. A chunk that still fails, or whose answer is malformed, gets NaN
    scores (the trainer counts NaN episodes invalid) and ``reward/remote_failed`` = 1: the
    call never raises for the server's or the network's failure. Once a chunk found the server
    down, the call's later chunks are failed without being sent, so a call with a dead or hung
    server returns within about ``timeout * (retries + 1) + backoff * (2**retries - 1)``
    seconds. Each request opens a new connection, directly (no ``http_proxy``), so a
    restarted server is used again by the next call.

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8000``.
        needs: the inputs to send, a subset of ``("images", "texts")``: the remote reward's own
            ``needs`` (``GET /health`` says them), which the client cannot know.
        timeout: seconds per socket operation (connecting, then each read) of one try.
        retries: tries after the first, for transport failures and 5xx.
        backoff: the first wait between tries, doubled each time.
        batch_size: episodes per request.

    Metrics: the server's metrics (NaN where a chunk failed) and ``reward/remote_failed``
    ``[N]``.
    """

    def __init__(
        self,
        url: str,
        needs: Sequence[str] = ("images",),
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        batch_size: int = 32,
    ) -> None:
        self.url = check_url(url)
        self.needs = _check_needs(needs)
        _check_number("timeout", timeout, 1e-3)
        _check_number("retries", retries, 0, integer=True)
        _check_number("backoff", backoff, 0)
        _check_number("batch_size", batch_size, 1, integer=True)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.batch_size = int(batch_size)
        self.last_error: str | None = None  # why the last failed chunk failed
        # Direct connections: a reward server is a local or in-cluster service.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __repr__(self) -> str:
        return f"RemoteReward(url={self.url!r}, needs={sorted(self.needs)})"

    # ----------------------------------------------------------------------- scoring
    def compute(
        self,
        *,
        prompts: Sequence[Any],
        images: torch.Tensor | None,
        texts: Sequence[str] | None,
    ) -> RewardOutput:
        n = len(prompts)
        scores = torch.full((n,), math.nan)
        failed = torch.zeros(n)
        metrics: dict[str, torch.Tensor] = {}
        errors: list[str] = []
        down = False
        for start in range(0, n, self.batch_size):
            part = slice(start, min(start + self.batch_size, n))
            if down:
                failed[part] = 1.0
                continue
            result = self._score_chunk(
                prompts[part],
                None if images is None or "images" not in self.needs else images[part],
                None if texts is None or "texts" not in self.needs else texts[part],
            )
            if result.error is not None:
                failed[part] = 1.0
                errors.append(result.error)
                down = result.server_down
                continue
            scores[part] = result.scores
            for name, values in result.metrics.items():
                metrics.setdefault(name, torch.full((n,), math.nan))[part] = values
        if errors:
            self.last_error = errors[-1]
            print(
                f"warning: RemoteReward {self.url}: {int(failed.sum())} of {n} samples not "
                f"scored ({errors[-1]}); they are invalid",
                file=sys.stderr,
            )
        metrics[FAILED_METRIC] = failed
        return RewardOutput(scores, metrics)

    def _score_chunk(
        self, prompts: Sequence[Any], images: torch.Tensor | None, texts: Sequence[str] | None
    ) -> ChunkResult:
        """One chunk's request, retried; its scores and metrics, or why it failed."""
        body = self._encode(prompts, images, texts)
        status, payload, error = self._post_with_retries(body)
        if error is not None:
            return ChunkResult(error=error, server_down=status is None)
        try:
            scores, metrics = decode_response(json.loads(payload), len(prompts))
        except (ValueError, UnicodeDecodeError) as problem:  # JSONDecodeError, WireError
            kind = "malformed answer" if isinstance(problem, WireError) else "answer is not JSON"
            return ChunkResult(error=f"{kind}: {_first_line(problem)}")
        return ChunkResult(scores=scores, metrics=metrics)

    def _encode(
        self, prompts: Sequence[Any], images: torch.Tensor | None, texts: Sequence[str] | None
    ) -> bytes:
        """The request body; a one-line ValueError when a prompt's metadata is not JSON (a
        problem of the prompts, not of the server)."""
        try:
            return json.dumps(encode_request(prompts, images, texts)).encode("utf-8")
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"RemoteReward cannot send the prompts as JSON ({_first_line(error)}); register "
                "a prompt codec (unigrpo_kit.rewards.wire.register_prompt_codec)"
            ) from None

    def _post_with_retries(self, body: bytes) -> tuple[int | None, bytes, str | None]:
        """``(status, payload, error)``: status None when no try got an HTTP answer; error
        None on a 200. Transport failures and 5xx are retried, 4xx is not."""
        error = "no try made"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF_S))
            status, payload, error = self._post(body)
            if status is not None and status < 500:
                return status, payload, error
        return status, payload, f"{error} after {self.retries + 1} tries"

    def _post(self, body: bytes) -> tuple[int | None, bytes, str | None]:
        """One try: ``(status, payload, error)``; status None on a transport failure."""
        request = urllib.request.Request(
            f"{self.url}/score",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as answer:
                return answer.status, answer.read(), None
        except urllib.error.HTTPError as failure:  # an HTTP answer that is not 2xx
            return failure.code, b"", f"HTTP {failure.code}: {_server_message(failure)}"
        except TRANSPORT_ERRORS as failure:
            return None, b"", _first_line(failure)

    # ----------------------------------------------------------------------- health
    def health(self) -> dict | None:
        """The server's ``GET /health`` answer (``{"reward": type, "needs": [...]}``), or None
        when it does not answer with JSON within ``timeout``."""
        try:
            with self._opener.open(f"{self.url}/health", timeout=self.timeout) as answer:
                return json.loads(answer.read())
        except (*TRANSPORT_ERRORS, ValueError):
            return None


def _server_message(failure: urllib.error.HTTPError) -> str:
    """The ``"error"`` of a JSON error answer, else its reason phrase."""
    try:
        message = json.loads(failure.read() or b"{}").get("error")
    except (*TRANSPORT_ERRORS, ValueError, AttributeError):
        message = None
    text = str(message or failure.reason or "")
    return (text.strip().splitlines() or [""])[0]
