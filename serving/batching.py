"""Cross-request batching: requests that arrive together are scored in one feature-store read and one
onnxruntime run, each with its own domain's θi (``Composer.logits_many``).

One scoring thread per process (one process = one core): while it scores a batch, the event loop keeps
reading requests and queues their jobs; when the thread is free it takes everything queued (up to
``serving.max_batch`` jobs, whole requests only). With nothing else in flight a request is scored at once,
so concurrency 1 pays no wait. Only while other requests have entered a route but not yet queued their
jobs (their bodies are being read) does the batcher wait for them, at most ``serving.batch_wait_s``,
yielding to the event loop (a timer would round a sub-millisecond wait up to the loop's 1 ms resolution).
A batch is scored by one model version: requests pinned to another version (or in a canary's slice) queue
beside the others and form their own batches, in arrival order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from contracts.errors import MamdrError
from serving.live import LiveModel
from serving.reload import ServingState
from serving.schemas import CTRResponse
from serving.scoring import Job, score_many

Results = list[CTRResponse | MamdrError]


class Batcher:
    """Queues the jobs of concurrent requests and scores them in batches on one worker thread."""

    def __init__(self, state: ServingState) -> None:
        self.state = state
        self.max_batch = state.settings.serving.max_batch
        self.wait_s = state.settings.serving.batch_wait_s
        self._pending: deque[tuple[Sequence[Job], LiveModel | None, asyncio.Future[Results]]] = deque()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mamdr-score")
        self._draining = False
        self._task: asyncio.Task[None] | None = None
        self.entered = 0  # requests inside a scoring route that have not queued their jobs yet
        self.batches = 0
        self.jobs = 0

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _run(self, batch: Sequence[Job], model: LiveModel | None) -> Results:
        """One batch, in the scoring thread."""
        self.batches += 1
        self.jobs += len(batch)
        self.state.metrics.batches.inc()
        self.state.metrics.batched_requests.inc(len(batch))
        return score_many(self.state, batch, model)

    async def score(self, jobs: Sequence[Job], model: LiveModel | None = None) -> Results:
        """Results of ``jobs`` (one request's) scored by ``model`` (default: the live version when the batch
        runs), with whatever else is queued for the same model; errors of the whole batch (no model, feature
        store down, model refused) are raised."""
        loop = asyncio.get_running_loop()
        if not self._draining and not self._pending and self.entered == 0 and len(jobs) <= self.max_batch:
            # idle (e.g. concurrency 1): straight to the scoring thread, no queue and no drain task
            self._draining = True
            try:
                return await loop.run_in_executor(self._executor, self._run, jobs, model)
            finally:
                self._draining = False
                if self._pending:  # requests that came while this one was scored
                    self._draining = True
                    self._task = loop.create_task(self._drain())
        future: asyncio.Future[Results] = loop.create_future()
        self._pending.append((jobs, model, future))
        if not self._draining:
            self._draining = True
            self._task = loop.create_task(self._drain())
        return await future

    def _queued_jobs(self) -> int:
        return sum(len(jobs) for jobs, _, _ in self._pending)

    async def _gather_more(self, loop: asyncio.AbstractEventLoop) -> None:
        """Yield to the loop while requests still being read may join, at most ``wait_s``."""
        deadline = loop.time() + self.wait_s
        while self.entered > 0 and self._queued_jobs() < self.max_batch and loop.time() < deadline:
            await asyncio.sleep(0)

    def _take(self) -> tuple[LiveModel | None, list[Job], list[tuple[asyncio.Future[Results], int]]]:
        """The oldest queued request's model and the queued requests for it that fit one batch, in order."""
        batch: list[Job] = []
        owners: list[tuple[asyncio.Future[Results], int]] = []
        kept: deque[tuple[Sequence[Job], LiveModel | None, asyncio.Future[Results]]] = deque()
        model: LiveModel | None = None
        chosen = False
        while self._pending:
            entry = self._pending.popleft()
            jobs, wanted, future = entry
            if future.done():  # the client went away
                continue
            if not chosen:
                model, chosen = wanted, True
            if wanted is not model:
                kept.append(entry)
                continue
            if batch and len(batch) + len(jobs) > self.max_batch:
                kept.append(entry)
                break
            owners.append((future, len(jobs)))
            batch.extend(jobs)
        kept.extend(self._pending)
        self._pending = kept
        return model, batch, owners

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                if self.wait_s > 0:
                    await self._gather_more(loop)
                model, batch, owners = self._take()
                if not batch:
                    continue
                try:
                    results = await loop.run_in_executor(self._executor, self._run, batch, model)
                except Exception as exc:  # the whole batch failed: every request gets the error
                    for future, _ in owners:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                start = 0
                for future, n in owners:
                    if not future.done():
                        future.set_result(results[start:start + n])
                    start += n
        finally:
            self._draining = False
