"""AnyFace load test: identify 70 %, verify 20 %, enrol 10 %, on real LFW faces.

    ANYFACE_DATA_DIR=data ANYFACE_API_KEY=... locust -f deploy/locust/locustfile.py --host http://127.0.0.1:8000

On test start (master or standalone process only) the gallery ANYFACE_LOAD_GALLERY (default `loadtest`) is
pre-filled with ANYFACE_LOAD_PREFILL (default 500) LFW identities (idempotent, see prefill.py), so every
run searches a gallery of a known size. Probes: 80 % genuine (another image of an enrolled person), 20 %
impostors (people not enrolled). Enrolment adds short-lived `load-…` subjects that each user deletes again
(it keeps at most ANYFACE_LOAD_CHURN_KEEP of them, and removes the rest when it stops), so the gallery stays
at its set size. ANYFACE_LOAD_SKIP_PREFILL=1 skips the pre-fill on test start (deploy/locust/run_load.py fills
the gallery once, before its steps). Only the --host given to locust is contacted; every request has a timeout
(ANYFACE_LOAD_TIMEOUT seconds, default 30).
"""

from __future__ import annotations

import logging
import os
import random
import sys
import uuid
from collections import deque
from pathlib import Path

from locust import HttpUser, between, events, task
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prefill import (  # the sibling module, found through the path above
    DEFAULT_GALLERY,
    DEFAULT_PREFILL,
    DEFAULT_SEED,
    Plan,
    api_key_from_env,
    env_float,
    env_int,
    image_file,
    lfw_root,
    make_plan,
    prefill,
)

log = logging.getLogger("anyface.locust")

GALLERY = os.environ.get("ANYFACE_LOAD_GALLERY", DEFAULT_GALLERY)
PREFILL_N = env_int("ANYFACE_LOAD_PREFILL", DEFAULT_PREFILL)
SEED = env_int("ANYFACE_LOAD_SEED", DEFAULT_SEED)
TIMEOUT = env_float("ANYFACE_LOAD_TIMEOUT", 30.0)
TOP_K = env_int("ANYFACE_LOAD_TOP_K", 5)
GENUINE_RATE = env_float("ANYFACE_LOAD_GENUINE_RATE", 0.8)
CHURN_KEEP = env_int("ANYFACE_LOAD_CHURN_KEEP", 10)
WAIT_MIN = env_float("ANYFACE_LOAD_WAIT_MIN", 0.5)
WAIT_MAX = env_float("ANYFACE_LOAD_WAIT_MAX", 1.5)

_plan: Plan | None = None


def get_plan() -> Plan:
    global _plan
    if _plan is None:
        _plan = make_plan(lfw_root(), PREFILL_N, GALLERY, SEED)
        log.info("load plan: %d enrolled identities, %d impostor images, gallery %r",
                 len(_plan.enrolled), len(_plan.impostors), GALLERY)
    return _plan


@events.init.add_listener
def _on_init(environment, **_kwargs):
    try:
        get_plan()
    except FileNotFoundError as exc:
        log.error("%s", exc)
        if environment.runner is not None:
            environment.runner.quit()


@events.test_start.add_listener
def _on_test_start(environment, **_kwargs):
    if isinstance(environment.runner, WorkerRunner) or not isinstance(environment.runner, (LocalRunner, MasterRunner)):
        return
    if os.environ.get("ANYFACE_LOAD_SKIP_PREFILL", "").strip().lower() in ("1", "true", "yes"):
        return
    if not environment.host:
        log.error("no --host given: nothing to pre-fill")
        return
    counts = prefill(environment.host, get_plan(), api_key_from_env(), TIMEOUT)
    if counts["failed"]:
        log.warning("prefill: %d identities could not be enrolled", counts["failed"])


class AnyFaceUser(HttpUser):
    """One API client: identify 70 %, verify 20 %, enrol 10 % of its requests."""

    wait_time = between(WAIT_MIN, WAIT_MAX)

    def on_start(self) -> None:
        self.plan = get_plan()
        self.rng = random.Random()
        self.churn: deque[str] = deque()
        key = api_key_from_env()
        if key:
            self.client.headers["X-API-Key"] = key

    def on_stop(self) -> None:
        while self.churn:
            self._delete_subject(self.churn.popleft())

    # helpers ----------------------------------------------------------------------------------------------
    def _probe(self) -> Path:
        if not self.plan.impostors or self.rng.random() < GENUINE_RATE:
            return self.rng.choice(self.rng.choice(self.plan.enrolled).probes)
        return self.rng.choice(self.plan.impostors)

    def _post(self, path: str, name: str, files, data, expected=(200,)):
        with self.client.post(path, files=files, data=data, name=name, timeout=TIMEOUT,
                              catch_response=True) as resp:
            if resp.status_code not in expected:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
            return resp

    def _delete_subject(self, subject_id: str) -> None:
        with self.client.delete(f"/v1/galleries/{GALLERY}/subjects/{subject_id}",
                                name="/v1/galleries/[gallery]/subjects/[subject_id] DELETE",
                                timeout=TIMEOUT, catch_response=True) as resp:
            if resp.status_code not in (200, 202, 204, 404):
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")

    # tasks ------------------------------------------------------------------------------------------------
    @task(70)
    def identify(self) -> None:
        data = {"gallery": GALLERY, "top_k": str(TOP_K), "all_faces": "false"}
        self._post("/v1/identify", "/v1/identify", {"image": image_file(self._probe())}, data)

    @task(20)
    def verify(self) -> None:
        ident = self.rng.choice(self.plan.enrolled)
        if self.rng.random() < 0.5:
            # 1:1 between two uploaded images: half genuine pairs, half impostor pairs
            other = ident if self.rng.random() < 0.5 else self.rng.choice(self.plan.enrolled)
            files = {"image_a": image_file(ident.enrol[0]), "image_b": image_file(self.rng.choice(other.probes))}
            self._post("/v1/verify", "/v1/verify [pair]", files, {})
        else:
            # 1:1 against an enrolled subject
            files = {"image": image_file(self._probe())}
            data = {"gallery": GALLERY, "subject_id": ident.subject_id}
            self._post("/v1/verify", "/v1/verify [gallery]", files, data)

    @task(10)
    def enrol(self) -> None:
        pool = self.plan.impostors or [p for ident in self.plan.enrolled for p in ident.enrol]
        subject_id = f"load-{uuid.uuid4().hex[:16]}"
        resp = self._post(
            f"/v1/galleries/{GALLERY}/subjects/{subject_id}/faces",
            "/v1/galleries/[gallery]/subjects/[subject_id]/faces",
            [("images", image_file(self.rng.choice(pool)))],
            {"name": "load test", "metadata": '{"loadtest": true}', "allow_multiple": "true"},
            expected=(200, 201),
        )
        if resp.status_code in (200, 201):
            self.churn.append(subject_id)
        while len(self.churn) > CHURN_KEEP:
            self._delete_subject(self.churn.popleft())
