"""``mamdr quickstart``: the whole product on one machine, in one command.

ml-latest-small (shipped) → its genre domains in the registry → clicks through the stream (embedded
``file://`` or ``--stream``) → the continual trainer (in this process) publishes versions → serving (a
``mamdr serve`` subprocess on a free loopback port) scores a sample request for every domain → a new
domain is onboarded through the admin API, served by θS at once, then by its own delta after its
clicks arrive → holdout AUC scored over HTTP → summary, JSON/Markdown report and a plot.

``--short`` runs the same steps on a tenth of the users with a smaller model (CI runs it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import shutil
import time
import zlib
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from contracts.errors import BackendUnavailable, ConfigError, Conflict
from contracts.settings import Settings, load_settings
from mamdr import devstack
from mamdr import quickstart_report as report

log = logging.getLogger("mamdr.quickstart")
ROUND_MIN_CLASS = 5  # a domain enters a round's prequential mean with at least 5 clicks and 5 non-clicks
MARKER = ".mamdr-quickstart"
OWNED = ("registry.db", "registry.db-wal", "registry.db-shm", "stream", "feature_store", "artifacts", "report",
         "logs", "run", "admin_token")


@dataclass(frozen=True)
class Plan:
    """What differs between the full and the short run (the code path does not)."""

    user_share: int  # keep users whose crc32 % user_share == 0
    emb_dim: int
    hidden: tuple[int, ...]
    round_events: int
    holdout_requests: int


FULL = Plan(user_share=1, emb_dim=64, hidden=(128, 64), round_events=40_000, holdout_requests=3000)
SHORT = Plan(user_share=10, emb_dim=32, hidden=(64, 32), round_events=15_000, holdout_requests=600)


@dataclass(frozen=True)
class QuickstartConfig:
    workdir: Path
    short: bool = False
    stream: str | None = None  # kafka://... instead of the embedded file:// stream
    feature_store: str | None = None  # redis://... instead of the embedded file:// store
    registry: str | None = None  # redis://... instead of the embedded sqlite file
    framework: str = "mamdr"  # or dn, or alternate (plain online training: the baseline)
    dataset: str = "ml-latest-small"
    new_domain: str = "film-noir"
    seed: int = 0
    progress: bool = True
    keep_serving: bool = False
    round_events: int | None = None  # events per trainer round; None: the plan's (a short stream needs fewer)

    @property
    def plan(self) -> Plan:
        plan = SHORT if self.short else FULL
        return plan if self.round_events is None else replace(plan, round_events=self.round_events)


def prepare_workdir(workdir: Path) -> Path:
    """A fresh quickstart folder; a previous quickstart's files are replaced, anything else is refused."""
    workdir = workdir.expanduser().resolve()
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            raise ConfigError(f"{workdir} is not empty and was not made by the quickstart; pick another --workdir")
        log.info("reusing %s: removing the previous quickstart's files", workdir)
        devstack.stop_process(workdir, "serving", timeout_s=10)
        for name in OWNED:
            path = workdir / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("made by mamdr quickstart; its contents are replaced on the next run\n")
    return workdir


def settings_for(cfg: QuickstartConfig, workdir: Path, token: str) -> Settings:
    stream = cfg.stream or f"file://{workdir / 'stream' / 'clicks'}"
    return load_settings(**{
        "home": str(workdir), "artifacts_url": f"file://{workdir / 'artifacts'}",
        "stream.url": stream, "stream.group": "mamdr-quickstart", "stream.create_topics": True,
        "feature_store.url": cfg.feature_store or f"file://{workdir / 'feature_store'}",
        "registry.url": cfg.registry or f"sqlite://{workdir / 'registry.db'}",
        "registry.admin_token": token,
        "trainer.round_events": cfg.plan.round_events, "trainer.round_seconds": 3600.0,
        "trainer.seed": cfg.seed, "trainer.framework": cfg.framework,
    })


@dataclass
class Events:
    main: list[dict[str, Any]]
    new: list[dict[str, Any]]
    holdout: list[dict[str, Any]]
    domains: list[str]
    names: dict[str, str]


def load_events(cfg: QuickstartConfig) -> Events:
    """The benchmark's clicks in time order, split into streamed (train+val) and held-out (test) events."""
    from trainer.data import benchmark_events

    source = benchmark_events(cfg.dataset, seed=cfg.seed, with_split=True, data_dir=load_settings().data_dir)
    if cfg.new_domain not in source.domains:
        raise ConfigError(f"--new-domain {cfg.new_domain!r} is not a domain of {cfg.dataset}: {source.domains}")
    share = cfg.plan.user_share
    out = Events([], [], [], [d for d in source.domains if d != cfg.new_domain],
                 dict(zip(source.domains, source.domain_names, strict=True)))
    for e in source:
        if share > 1 and zlib.crc32(e["user_id"].encode()) % share:
            continue
        split = e.pop("features")["split"]
        if split == "test":
            out.holdout.append(e)
        else:
            (out.new if e["domain"] == cfg.new_domain else out.main).append(e)
    return out


class Service:
    """A ``mamdr serve`` subprocess on a free loopback port, and an HTTP client for it."""

    def __init__(self, settings: Settings, workdir: Path, token: str) -> None:
        self.port = devstack.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        self.workdir = workdir
        argv = devstack.mamdr_argv("serve", "--artifacts", settings.artifacts_url,
                                   "--feature-store", settings.feature_store.url,
                                   "--registry", settings.registry.url, "--port", str(self.port))
        env = {"MAMDR_REGISTRY__ADMIN_TOKEN": token, "MAMDR_SERVING__RELOAD_POLL_S": "0.3"}
        self.proc = devstack.start_process("serving", argv, workdir, env, die_with_parent=True)
        self.http = httpx.Client(base_url=self.url, timeout=30.0)
        took = devstack.wait_until(lambda: self.http.get("/healthz").status_code == 200, 60, "serving",
                                   workdir, "serving", self.proc)
        log.info("serving is up at %s in %.1f s (log %s)", self.url, took, devstack.log_file(workdir, "serving"))

    def wait_version(self, version: str, timeout_s: float = 90.0) -> None:
        devstack.wait_until(lambda: self.http.get("/readyz").json().get("model_version") == version, timeout_s,
                            f"serving (waiting for version {version})", self.workdir, "serving", self.proc)

    def score(self, domain: str, user: str, items: list[str]) -> list[float]:
        resp = self.http.post(f"/v1/domains/{domain}/ctr", json={"user_id": user, "item_ids": items})
        if resp.status_code != 200:
            raise BackendUnavailable(f"scoring {domain} answered {resp.status_code}: {resp.text[:200]}")
        return list(resp.json()["scores"])

    def served_version(self) -> str | None:
        return self.http.get("/readyz").json().get("model_version")

    def create_domain(self, domain: str, name: str) -> int:
        resp = self.http.post("/v1/domains", json={"id": domain, "display_name": name},
                              headers={"Authorization": f"Bearer {self.token}", "X-Actor": "quickstart"})
        if resp.status_code not in (201, 409):
            raise BackendUnavailable(f"POST /v1/domains answered {resp.status_code}: {resp.text[:200]}")
        return resp.status_code

    def close(self) -> None:
        self.http.close()
        devstack.stop_process(self.workdir, "serving", timeout_s=10)


def _produce(stream: Any, events: list[dict[str, Any]], what: str, progress: bool) -> None:
    from tqdm import tqdm

    with stream.producer() as producer:
        for e in tqdm(events, desc=f"streaming {what}", unit="ev", disable=not progress, mininterval=1.0,
                      leave=False):
            producer.send(json.dumps(e, separators=(",", ":")).encode())
        producer.flush()
    log.info("streamed %d %s clicks to %s", len(events), what, stream_url_safe(stream))


def stream_url_safe(stream: Any) -> str:
    return str(getattr(stream, "url", type(stream).__name__))


def _train(trainer: Any, rounds: list[dict[str, Any]], idle_s: float) -> None:
    """Run the service loop round by round until the stream is drained (one log line per version)."""
    while True:
        before = trainer.prequential.snapshot()
        reports = trainer.run(max_rounds=1, idle_exit_s=idle_s)
        if not reports:
            return
        r = reports[0]
        mean = trainer.prequential.mean_auc()
        # this round's events only, each scored by the model live when it arrived (the previous rounds')
        window = list(trainer.prequential.auc_since(before, min_class=ROUND_MIN_CLASS).values())
        this_round = sum(window) / len(window) if window else None
        rounds.append({"version": r.version, "events": r.events, "domains_trained": len(r.domains_trained),
                       "seconds": r.seconds, "prequential_mean_auc": None if mean != mean else mean,
                       "prequential_round_auc": this_round})
        log.info("round %d: published %s (%d events, %d domains trained, %.1f s), prequential AUC of the round "
                 "%s, cumulative %.4f, lag %d", len(rounds), r.version, r.events, len(r.domains_trained), r.seconds,
                 "-" if this_round is None else f"{this_round:.4f}", mean,
                 trainer.consumer.lag() if trainer.consumer else -1)


def _sample(events: list[dict[str, Any]], domain: str, n: int = 5,
            known: list[dict[str, Any]] | None = None) -> tuple[str, list[str]]:
    """A user of ``domain`` and up to ``n`` items of that domain, for the sample requests.

    With ``known`` (events already trained on), ids seen there come first, so a new domain's sample is
    not all cold ids (which θS would score with the same mean vectors).
    """
    rows = [e for e in events if e["domain"] == domain]
    seen_users = {e["user_id"] for e in known or []}
    seen_items = {e["item_id"] for e in known or []}
    by_user = Counter(e["user_id"] for e in rows)
    user = max(by_user, key=lambda u: (u in seen_users, by_user[u], u))
    items = sorted(dict.fromkeys(e["item_id"] for e in rows), key=lambda i: i not in seen_items)[:n]
    return user, items


def run_quickstart(cfg: QuickstartConfig) -> dict[str, Any]:
    """Run every step; returns the summary (also written as JSON/Markdown next to the plot)."""
    t_start = time.monotonic()
    import torch

    from contracts.artifacts import open_artifacts, read_manifest
    from domain_registry import open_registry
    from feature_store import open_store
    from stream import open_stream
    from trainer.service.loop import ContinualTrainer

    # One torch thread: serving and the HTTP client need the other core, and an oversubscribed
    # machine made a round 8x slower with two threads than with one (measured: 128 s vs 15 s).
    torch.set_num_threads(1)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the progress
    plan = cfg.plan
    mode = "short" if cfg.short else "full"
    workdir = prepare_workdir(cfg.workdir)
    token = secrets.token_urlsafe(18)
    (workdir / "admin_token").write_text(token + "\n")
    (workdir / "admin_token").chmod(0o600)
    settings = settings_for(cfg, workdir, token)
    log.info("[1/8] quickstart (%s) in %s: stream %s, feature store %s, registry %s", mode, workdir,
             settings.stream.url, settings.feature_store.url, settings.registry.url)

    log.info("[2/8] building the %s benchmark%s", cfg.dataset, f" (1/{plan.user_share} of the users)"
             if plan.user_share > 1 else "")
    ev = load_events(cfg)
    log.info("%d domains + 1 to onboard (%s); %d clicks to stream, %d for %s, %d held out",
             len(ev.domains), cfg.new_domain, len(ev.main), len(ev.new), cfg.new_domain, len(ev.holdout))

    registry = open_registry(settings.registry.url, settings.registry)
    store = open_store(settings.feature_store.url, settings.feature_store)
    stream = open_stream(settings.stream.url, settings.stream)
    artifacts = open_artifacts(settings.artifacts_url).root
    artifacts.mkdir(parents=True, exist_ok=True)
    service: Service | None = None
    trainer = None
    try:
        log.info("[3/8] registering %d domains in the registry", len(ev.domains))
        for d in ev.domains:
            with contextlib.suppress(Conflict):
                registry.create_domain(d, display_name=ev.names[d], actor="quickstart")

        log.info("[4/8] starting serving (unready until the first version is published)")
        service = Service(settings, workdir, token)

        log.info("[5/8] streaming clicks into the continual trainer (%s, emb %d, hidden %s, a round per %d events)",
                 "mlp", plan.emb_dim, ",".join(map(str, plan.hidden)), plan.round_events)
        trainer = ContinualTrainer(settings, stream=stream, store=store, registry=registry, artifacts=artifacts,
                                   model="mlp", model_config={"emb_dim": plan.emb_dim, "hidden": plan.hidden})
        trainer.start()
        rounds: list[dict[str, Any]] = []
        _produce(stream, ev.main, "benchmark", cfg.progress)
        _train(trainer, rounds, idle_s=1.5)
        if not rounds:
            raise BackendUnavailable(f"the trainer published nothing: no events arrived from {settings.stream.url}")
        before = rounds[-1]["version"]
        service.wait_version(before)

        log.info("[6/8] scoring a sample request for every domain over HTTP (%s)", service.url)
        samples = {d: _sample(ev.main, d) for d in ev.domains}
        for d, (user, items) in samples.items():
            scores = service.score(d, user, items)
            log.info("  POST /v1/domains/%s/ctr user %s, %d items -> %s", d, user, len(items),
                     " ".join(f"{s:.3f}" for s in scores))

        new = cfg.new_domain
        log.info("[7/8] onboarding %r through POST /v1/domains", new)
        status = service.create_domain(new, ev.names[new])
        user, items = _sample(ev.new or ev.holdout, new, known=ev.main)
        devstack.wait_until(lambda: service.http.post(f"/v1/domains/{new}/ctr", json={
            "user_id": user, "item_ids": items}).status_code == 200, 30, f"serving (domain {new})")
        if new in read_manifest(artifacts / before).deltas:
            raise BackendUnavailable(f"{new} has a delta before any of its clicks arrived")
        theta_s = service.score(new, user, items)
        cold = service.http.post(f"/v1/domains/{new}/ctr", json={"user_id": user, "item_ids": items}).json()
        log.info("  %s (HTTP %d) served by θS in %s: %s%s", new, status, before, " ".join(f"{s:.3f}" for s in theta_s),
                 f" ({len(cold['cold_items'])} of {len(items)} items are new: scored with the mean item vector)"
                 if cold["cold_items"] else "")
        _produce(stream, ev.new, new, cfg.progress)
        _train(trainer, rounds, idle_s=1.5)
        after = rounds[-1]["version"]
        manifest = read_manifest(artifacts / after)
        if after == before or new not in manifest.deltas:
            raise BackendUnavailable(f"no delta was trained for {new} (live version {after})")
        service.wait_version(after)
        own = service.score(new, user, items)
        log.info("  %s served with its own delta in %s: %s", new, after, " ".join(f"{s:.3f}" for s in own))

        log.info("[8/8] holdout AUC: scoring held-out clicks over HTTP")
        requests = report.holdout_requests(ev.holdout, plan.holdout_requests, settings.serving.max_items, cfg.seed)
        from tqdm import tqdm

        with tqdm(total=len(requests), desc="holdout", unit="req", disable=not cfg.progress, leave=False) as bar:
            holdout = report.holdout_auc(requests, service.score, bar.update)
        prequential = trainer.prequential.cumulative()
        streamed = Counter(e["domain"] for e in ev.main + ev.new)
        domains: dict[str, dict[str, Any]] = {}
        for d in [*ev.domains, new]:
            pre = prequential.get(d, {}).get("auc")
            delta = manifest.deltas.get(d)
            domains[d] = {"name": ev.names[d], "events": streamed.get(d, 0),
                          "prequential_auc": None if pre is None or pre != pre else pre,
                          "holdout_auc": holdout.get(d, {}).get("auc"), "holdout_n": holdout.get(d, {}).get("n", 0),
                          "delta": delta.version if delta else None, "onboarded": d == new}

        def mean(key: str) -> float | None:
            values = [r[key] for r in domains.values() if r[key] is not None]
            return sum(values) / len(values) if values else None

        summary: dict[str, Any] = {
            "mode": mode, "dataset": cfg.dataset, "model": f"mlp emb {plan.emb_dim} hidden {plan.hidden}",
            "workdir": str(workdir), "rounds": len(rounds), "live_version": after,
            "seconds": time.monotonic() - t_start, "domains": domains,
            "mean": {"prequential_auc": mean("prequential_auc"), "holdout_auc": mean("holdout_auc")},
            "onboarding": {"domain": new, "theta_s_version": before, "theta_s_scores": _round(theta_s),
                           "delta_version": after, "delta_scores": _round(own), "events": len(ev.new),
                           "user": user, "items": items},
            "endpoints": {
                "serving": service.url, "scoring": f"POST {service.url}/v1/domains/{{domain}}/ctr",
                "docs": f"{service.url}/docs", "ready": f"{service.url}/readyz", "metrics": f"{service.url}/metrics",
                "admin API": f"{service.url}/v1/domains (Bearer token in {workdir / 'admin_token'})",
                "stream": settings.stream.url, "feature store": settings.feature_store.url,
                "registry": settings.registry.url, "artifacts": settings.artifacts_url,
            },
            "round_log": rounds,
        }
        paths = report.write_report(summary, workdir / "report")
        print_summary(summary, paths)
        if cfg.keep_serving:
            print(f"serving stays up at {service.url} (Ctrl-C to stop)", flush=True)
            while service.proc.poll() is None:
                time.sleep(1)
        return summary
    finally:
        t_close = time.monotonic()
        if service is not None:
            service.close()
        if trainer is not None:
            trainer.close()
        stream.close()
        store.close()
        registry.close()
        log.info("stopped serving and closed the backends in %.1f s", time.monotonic() - t_close)


def _round(values: list[float]) -> list[float]:
    return [round(v, 4) for v in values]


def print_summary(summary: dict[str, Any], paths: dict[str, Path]) -> None:
    ob = summary["onboarding"]
    lines = ["", f"MAMDR quickstart ({summary['mode']}) done in {summary['seconds']:.0f} s: "
             f"{summary['rounds']} rounds, live version {summary['live_version']}", "",
             report.domain_table(summary), "",
             f"onboarded {ob['domain']}: θS scores {ob['theta_s_scores']} ({ob['theta_s_version']}) -> "
             f"own delta {ob['delta_scores']} ({ob['delta_version']})", "", "endpoints (stopped at exit; "
             "--serve keeps them up):"]
    lines += [f"  {k:14s} {v}" for k, v in summary["endpoints"].items()]
    lines += ["", f"report: {paths['markdown']} and {paths['json']}", f"plot:   {paths['plot']}", ""]
    print("\n".join(lines), flush=True)
