"""Triton Inference Server sessions: the client side of models served by Triton (gRPC or HTTP).

A `TritonSession` owns everything about talking to one server: a client per thread and role (tritonclient's HTTP
client is not thread-safe), gRPC channel arguments that reconnect within a second once Triton is back, per-call
timeouts, a readiness probe cached for about a second, each model's `max_batch_size` (learnt once, larger batches
are split), and turning every client failure or timeout into `service.errors.BackendUnavailable`.

Triton being down is an expected state, not a crash: the constructor never connects, `ready()` says false and
every failed or timed-out call raises `BackendUnavailable`. When Triton comes back, the next call reconnects; no
restart needed. Every model takes `INPUT_TENSOR` (FP32) and returns `OUTPUT_TENSOR` (`service.models.contract`).
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np

from service.errors import BackendUnavailable
from service.models.contract import INPUT_TENSOR, OUTPUT_TENSOR

log = logging.getLogger(__name__)

Protocol = Literal["grpc", "http"]
Role = Literal["infer", "probe"]

READY_CACHE_S = 1.0
# readiness is probed on the request path of /readyz: never wait long for it
READY_TIMEOUT_S = 1.0
# reconnect soon after Triton comes back instead of gRPC's default backoff of up to two minutes
GRPC_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class TritonSession:
    """The models `models` of the Triton server at `url` (host:port), over `protocol`, each call bounded by
    `timeout_s` (readiness probes by at most `READY_TIMEOUT_S`)."""

    def __init__(self, url: str, protocol: Protocol, models: Iterable[str], timeout_s: float = 5.0) -> None:
        if protocol not in ("grpc", "http"):
            raise ValueError(f"unknown Triton protocol {protocol!r}")
        if url.startswith("https://"):
            raise ValueError("TLS to Triton is not supported; give host:port")
        for scheme in ("http://", "grpc://"):
            url = url.removeprefix(scheme)
        self.url = url
        self.protocol = protocol
        self.models = sorted(set(models))
        self.timeout_s = timeout_s
        # tritonclient's HTTP client is not thread-safe: one client per thread (batcher threads, the event loop)
        self._local = threading.local()
        self._ready_lock = threading.Lock()
        self._ready_at = float("-inf")
        self._ready_value = False
        # each model's max_batch_size, learnt from its config once it is ready: larger batches are split
        self._max_batch: dict[str, int] = {}

    # ------------------------------------------------------------------ clients

    def _client(self, role: Role = "infer") -> Any:
        client = getattr(self._local, role, None)
        if client is None:
            client = self._new_client(self.timeout_s if role == "infer" else min(self.timeout_s, READY_TIMEOUT_S))
            setattr(self._local, role, client)
        return client

    def _new_client(self, timeout_s: float) -> Any:
        if self.protocol == "grpc":
            import tritonclient.grpc as grpcclient

            return grpcclient.InferenceServerClient(self.url, channel_args=GRPC_CHANNEL_ARGS)
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(self.url, connection_timeout=timeout_s, network_timeout=timeout_s)

    def _drop_client(self, role: Role = "infer") -> None:
        """Forget this thread's client after a failure, so that the next call starts a fresh connection."""
        client = getattr(self._local, role, None)
        setattr(self._local, role, None)
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a broken client must not hide the original error
                log.debug("closing the Triton client failed", exc_info=True)

    def _timeout_kwargs(self, timeout_s: float) -> dict[str, float]:
        # gRPC takes a deadline per call; the HTTP client's timeouts were set when it was built
        return {"client_timeout": timeout_s} if self.protocol == "grpc" else {}

    def _client_errors(self) -> tuple[type[BaseException], ...]:
        if self.protocol == "http":
            import gevent  # geventhttpclient's timeouts are gevent.Timeout, a BaseException

            return (Exception, gevent.Timeout)
        return (Exception,)

    # ------------------------------------------------------------------ inference

    def run(self, model: str, tensor: np.ndarray) -> np.ndarray:
        """`model`'s output for `tensor` (batch first), split into requests of at most its `max_batch_size`."""
        if model not in self._max_batch:
            try:
                self._learn_batch_limits(self._client(), self._timeout_kwargs(self.timeout_s), [model])
            except self._client_errors() as exc:
                raise self._unavailable(model, exc) from exc
        limit = self._max_batch.get(model, 0)
        if 0 < limit < len(tensor):
            return np.concatenate([self.infer(model, tensor[i:i + limit]) for i in range(0, len(tensor), limit)])
        return self.infer(model, tensor)

    def infer(self, model: str, tensor: np.ndarray) -> np.ndarray:
        """One inference request: `model`'s float32 output for `tensor`, whatever its batch size."""
        proto = importlib.import_module(f"tritonclient.{self.protocol}")
        tensor = np.ascontiguousarray(tensor, dtype=np.float32)
        started = time.monotonic()
        try:
            inp = proto.InferInput(INPUT_TENSOR, list(tensor.shape), "FP32")
            inp.set_data_from_numpy(tensor)
            out = proto.InferRequestedOutput(OUTPUT_TENSOR)
            result = self._client().infer(model, [inp], outputs=[out], **self._timeout_kwargs(self.timeout_s))
            output = result.as_numpy(OUTPUT_TENSOR)
        except self._client_errors() as exc:
            raise self._unavailable(model, exc, time.monotonic() - started) from exc
        if output is None:
            raise BackendUnavailable(f"Triton model {model!r} returned no {OUTPUT_TENSOR!r} output")
        return np.asarray(output, dtype=np.float32)

    def _unavailable(self, model: str, exc: BaseException, elapsed: float | None = None) -> BackendUnavailable:
        """Forget the failed connection and what was learnt about the model; the error for the client."""
        self._drop_client()
        self._max_batch.pop(model, None)
        self._ready_at = float("-inf")  # let the next /readyz look again
        after = f" after {elapsed:.2f} s" if elapsed is not None else ""
        log.warning("Triton %s call for model %r failed%s: %s", self.protocol, model, after, _short(exc))
        return BackendUnavailable(f"the embedding backend (Triton at {self.url}, model {model!r}) is unavailable: "
                                  f"{_short(exc)}")

    # ------------------------------------------------------------------ readiness

    def ready(self) -> bool:
        """Triton is live and every model of this session is ready; cached for about a second."""
        now = time.monotonic()
        with self._ready_lock:
            if now - self._ready_at < READY_CACHE_S:
                return self._ready_value
            value = self._probe()
            self._ready_value, self._ready_at = value, time.monotonic()
            return value

    def _probe(self) -> bool:
        kwargs = self._timeout_kwargs(min(self.timeout_s, READY_TIMEOUT_S))
        why = ""
        try:
            client = self._client("probe")
            if not client.is_server_live(**kwargs):
                why = "server not live"
            else:
                missing = [m for m in self.models if not client.is_model_ready(m, **kwargs)]
                if missing:
                    why = f"models not ready: {missing}"
                else:
                    self._learn_batch_limits(client, kwargs, self.models)
        except self._client_errors() as exc:
            self._drop_client("probe")
            why = f"not reachable: {_short(exc)}"
        if why and self._ready_value:
            log.warning("Triton at %s is no longer ready: %s", self.url, why)
        elif why and self._ready_at == float("-inf"):
            log.info("Triton at %s not ready: %s", self.url, why)
        elif not why and not self._ready_value:
            log.info("Triton at %s is ready: %s", self.url, self.models)
        return not why

    def _learn_batch_limits(self, client: Any, kwargs: dict[str, float], models: Iterable[str]) -> None:
        for model in set(models) - set(self._max_batch):
            config = client.get_model_config(model, **kwargs, **({"as_json": True} if self.protocol == "grpc" else {}))
            config = config.get("config", config)  # gRPC wraps it, HTTP does not
            self._max_batch[model] = int(config.get("max_batch_size", 0) or 0)
            log.info("Triton model %s: max_batch_size %s", model, self._max_batch[model] or "unbounded")


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
