"""Serve any registered reward over the remote reward protocol (``unigrpo-kit serve-reward``).

``POST /score`` scores a batch (see :mod:`unigrpo_kit.rewards.wire`), ``GET /health`` names the
reward and its needs. Stdlib only: a ``ThreadingHTTPServer``, one thread per request, with a
lock around the reward unless it declares ``thread_safe = True``. A malformed request is
answered 400, a reward that raises 500, both with ``{"error": "<one line>"}``; a client
(:class:`~unigrpo_kit.rewards.remote.RemoteReward`) then marks the samples invalid.

Run it as ``unigrpo-kit serve-reward REWARD_CONFIG`` or ``python -m
unigrpo_kit.reward_server REWARD_CONFIG``.
"""

from __future__ import annotations

import ast
import contextlib
import json
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:  # imported where used: the CLI that registers the command starts without torch
    from unigrpo_kit.rewards.base import Reward

MAX_BODY_BYTES = 1 << 30  # 1 GiB: a batch of 64 PNGs of 1024x1024 is ~200 MB in base64
SOCKET_TIMEOUT_S = 300.0  # a client that stops sending mid-body frees its thread after this


class RewardServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` that holds one reward, its name and its lock."""

    daemon_threads = True  # a request still being scored does not hold up shutdown

    def __init__(self, address: tuple[str, int], reward: Reward, name: str) -> None:
        super().__init__(address, RewardHandler)
        self.reward = reward
        self.reward_name = name
        thread_safe = bool(getattr(reward, "thread_safe", False))
        self.reward_lock = contextlib.nullcontext() if thread_safe else threading.Lock()

    @property
    def url(self) -> str:
        """``http://host:port``, with the port actually bound (port 0 picks a free one)."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class RewardHandler(BaseHTTPRequestHandler):
    """``GET /health`` and ``POST /score``; every answer is JSON."""

    server: RewardServer
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S

    def do_GET(self) -> None:  # noqa: N802  (the name http.server dispatches to)
        if self._route() != "/health":
            self._send(404, {"error": f"no {self.path}; GET /health or POST /score"})
            return
        needs = sorted(self.server.reward.needs)
        self._send(200, {"reward": self.server.reward_name, "needs": needs})

    def do_POST(self) -> None:  # noqa: N802
        from unigrpo_kit.rewards.wire import WireError, encode_response

        if self._route() != "/score":
            self._send(404, {"error": f"no {self.path}; POST /score or GET /health"})
            return
        try:
            prompts, images, texts = self._request()
        except WireError as error:
            self._send(400, {"error": str(error)})
            return
        reward = self.server.reward
        try:
            with self.server.reward_lock:
                output = reward(prompts=prompts, images=images, texts=texts)
            answer = encode_response(output.scores, output.metrics)
        except Exception as error:  # the reward failed: the client marks the samples invalid
            self.log_error("%s", traceback.format_exc().rstrip())
            first = (str(error).strip().splitlines() or [""])[0]
            self._send(
                500, {"error": f"{self.server.reward_name}: {type(error).__name__}: {first}"}
            )
            return
        self._send(200, answer)

    def _route(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    def _request(self) -> tuple[list[Any], Any, list[str] | None]:
        """The decoded ``(prompts, images, texts)``; a WireError for a body that is too big,
        not JSON, not the protocol's, or without an input the reward needs."""
        from unigrpo_kit.rewards.wire import WireError, decode_request

        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise WireError("a POST /score needs a Content-Length header")
        if int(length) > MAX_BODY_BYTES:
            raise WireError(f"the body is {int(length)} bytes; at most {MAX_BODY_BYTES}")
        try:
            body = json.loads(self.rfile.read(int(length)))
        except (ValueError, UnicodeDecodeError) as error:
            raise WireError(f"the body is not JSON ({error})") from None
        prompts, images, texts = decode_request(body)
        given = {"images": images is not None, "texts": texts is not None}
        missing = sorted(need for need in self.server.reward.needs if not given[need])
        if missing:
            raise WireError(
                f"{self.server.reward_name} needs {', '.join(missing)}; the request has none "
                f"(set the client's needs={sorted(self.server.reward.needs)})"
            )
        return prompts, images, texts

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status >= 400:  # the body may be unread: this connection cannot carry another request
            self.send_header("Connection", "close")
            self.close_connection = True
            self.log_error("%s %s -> %d %s", self.command, self.path, status, payload.get("error"))
        self.end_headers()
        self.wfile.write(data)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        """Successful requests are not logged (errors are, by :meth:`_send`)."""


def build_reward(reward: Reward | dict) -> tuple[Reward, str]:
    """The reward (built with ``REWARDS.build`` from a config) and the name it is served as."""
    from unigrpo_kit.registry import REWARDS
    from unigrpo_kit.rewards.base import Reward

    if isinstance(reward, Reward):
        return reward, type(reward).__name__
    reward = dict(reward)
    if not isinstance(reward.get("type"), str):
        raise ValueError(
            f"the reward config needs a type, e.g. dict(type='ShapeWorldJudge'); got {reward!r}"
        )
    return REWARDS.build(reward), reward["type"]


def make_server(reward: Reward | dict, host: str = "127.0.0.1", port: int = 8000) -> RewardServer:
    """A server of ``reward`` (a built reward or a config) bound to ``host:port``, not yet
    serving: call ``serve_forever()`` (e.g. in a thread) and ``shutdown()``."""
    built, name = build_reward(reward)
    return RewardServer((host, port), built, name)


def serve(reward_cfg: Reward | dict, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve a reward until Ctrl-C; prints ``serving <type> on http://host:port`` first."""
    run_until_interrupted(make_server(reward_cfg, host, port))


def run_until_interrupted(server: RewardServer) -> None:
    """Print ``serving <type> on http://host:port``, then serve until Ctrl-C."""
    print(f"serving {server.reward_name} on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr, flush=True)
    finally:
        server.server_close()


# --------------------------------------------------------------------------- configs
def load_reward_config(source: str) -> dict:
    """The reward config of REWARD_CONFIG: a ``.py`` file with ``reward = dict(type=...)`` (an
    mmengine config, a recipe too), or an inline ``dict(type=...)``, ``{...}`` or JSON object.
    A one-line ValueError otherwise."""
    if source.strip().endswith(".py"):
        return _reward_of_file(Path(source.strip()))
    try:
        config = json.loads(source)
    except ValueError:
        try:
            config = _literal(ast.parse(source.strip(), mode="eval").body)
        except (SyntaxError, ValueError) as error:
            raise ValueError(
                f"REWARD_CONFIG {source!r} is neither a .py file nor a dict such as "
                f"\"dict(type='ShapeWorldJudge', mode='partial')\" ({error})"
            ) from None
    if not isinstance(config, dict) or not isinstance(config.get("type"), str):
        raise ValueError(
            f"REWARD_CONFIG {source!r} must be a dict with a type, e.g. "
            "\"dict(type='ShapeWorldJudge')\""
        )
    return config


def _reward_of_file(path: Path) -> dict:
    from mmengine.config import Config

    if not path.is_file():
        raise ValueError(f"REWARD_CONFIG {str(path)!r} is not a file")
    try:
        cfg = Config.fromfile(str(path))
    except Exception as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"REWARD_CONFIG {path} could not be read: {first}") from None
    reward = cfg.get("reward")
    if not isinstance(reward, dict) or not isinstance(reward.get("type"), str):
        raise ValueError(f"REWARD_CONFIG {path} needs reward = dict(type=...); it has none")
    return reward.to_dict() if hasattr(reward, "to_dict") else dict(reward)


def _literal(node: ast.AST) -> Any:
    """A Python literal, where ``dict(key=...)`` counts as a literal dict (nested ones too)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        if node.args or any(keyword.arg is None for keyword in node.keywords):
            raise ValueError("dict(...) takes key=value pairs only")
        return {keyword.arg: _literal(keyword.value) for keyword in node.keywords}
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise ValueError("** in a dict is not supported")
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(item) for item in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    return ast.literal_eval(node)


# --------------------------------------------------------------------------- command
def _fail(message: str, code: int = 2) -> None:
    """One line on stderr, then exit (the CLI's way out for user errors)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=code)


def serve_reward_command(
    reward_config: Annotated[
        str,
        typer.Argument(
            help="A .py config holding reward = dict(type=...) (a recipe works), or an inline "
            "dict such as \"dict(type='ShapeWorldJudge', mode='partial')\".",
            show_default=False,
            metavar="REWARD_CONFIG",
        ),
    ],
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 for every interface.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port; 0 picks a free one.")] = 8000,
) -> None:
    """Serve a registered reward over HTTP to RemoteReward clients, until Ctrl-C.

    The protocol (POST /score, GET /health) is in docs/reward_protocol.md."""
    from unigrpo_kit.registry import UnknownComponentError

    try:
        config = load_reward_config(reward_config)
        server = make_server(config, host, port)
    except (ValueError, TypeError, UnknownComponentError) as error:
        _fail((str(error).strip().splitlines() or [type(error).__name__])[0])
    except OSError as error:  # the address is taken, or not this machine's
        _fail(f"cannot listen on {host}:{port} ({error.strerror or error})")
    run_until_interrupted(server)


if __name__ == "__main__":  # python -m unigrpo_kit.reward_server REWARD_CONFIG --port N
    typer.run(serve_reward_command)
