"""What holding θi compact costs per onnxruntime run: the paper MLP, one full-network delta, 100 candidates.

In-process, no feature store, the variants measured in turns (30 rounds of 20 runs; min and median of the
rounds' means, the min being the machine's quiet moments):

- the θS graph, weights constant (a domain without a delta; what bench_serving's floor runs);
- composed float32 weights fed as inputs (the ``feed`` composer before compact deltas: 0.535 MiB per domain);
- float16 θi fed, ``W + Cast(W__delta)`` in the graph (now, ``trainer.delta_dtype = float16``: 0.27 MiB);
- float32 θi fed, ``W + W__delta`` in the graph (now, with ``trainer.delta_dtype = float32``);
- float16 θi composed by numpy into a float32 buffer per run, then fed (the alternative to casting in the graph).

Run: ``PYTHONPATH=$PWD ~/.cache/mamdr/venv/bin/python bench/delta_run_cost.py``
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from contracts.artifacts import load_version
from serving.composition import FeedComposer, session_options
from trainer.export import export_version
from trainer.models import ModelConfig, build_model
from trainer.params import DomainParameters


def main() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", ModelConfig(n_users=100, n_items=100, n_domains=4, dropout=0.0))
    params = DomainParameters(model)
    for d in range(4):
        params.set_delta(d, {n: torch.randn_like(t) * 0.01 for n, t in params.shared_specific().items()})
    tmp = Path(tempfile.mkdtemp(prefix="delta-run-cost-"))
    domains = {f"dom-{d}": d for d in range(4)}
    export_version(params, domains, tmp, "f16", delta_dtype="float16")
    export_version(params, domains, tmp, "f32", delta_dtype="float32")
    f16, f32 = FeedComposer(load_version(tmp / "f16")), FeedComposer(load_version(tmp / "f32"))
    loaded = load_version(tmp / "f32")
    graph = onnx.load_model_from_string(loaded.shared_bytes)  # the former feed graph: weights as inputs
    inits = {i.name: i for i in graph.graph.initializer}
    for name in loaded.delta_names:
        graph.graph.input.append(onnx.helper.make_tensor_value_info(name, inits[name].data_type,
                                                                    list(inits[name].dims)))
    fed = ort.InferenceSession(graph.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"])
    composed = {n: np.ascontiguousarray(loaded.shared[n] + d) for n, d in loaded.read_delta("dom-0").items()}
    half = load_version(tmp / "f16").read_delta("dom-0")
    held = sum(a.nbytes for a in half.values())
    buffers = {n: np.empty_like(loaded.shared[n]) for n in half}
    user = np.random.default_rng(2).standard_normal((100, 128), dtype=np.float32)
    items = np.random.default_rng(3).standard_normal((100, 128), dtype=np.float32)
    rows = {"user_emb": user, "item_emb": items}

    def numpy_compose() -> object:
        feeds = dict(rows)
        for name, delta in half.items():
            np.add(loaded.shared[name], delta, out=buffers[name], dtype=np.float32)
            feeds[name] = buffers[name]
        return fed.run(["logit"], feeds)

    cases = {
        "θS graph, weights constant (no delta)": lambda: f16.base.run(["logit"], rows),
        f"composed float32 fed ({held * 2 / 2**20:.3f} MiB held)": lambda: fed.run(["logit"], {**rows, **composed}),
        f"float16 θi fed, Cast + Add in graph ({held / 2**20:.3f} MiB held)": lambda: f16.logits("dom-0", user, items),
        f"float32 θi fed, Add in graph ({held * 2 / 2**20:.3f} MiB held)": lambda: f32.logits("dom-0", user, items),
        "float16 θi, numpy compose per run, fed": numpy_compose,
    }
    found: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(30):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            for _ in range(20):
                fn()
            found[name].append((time.perf_counter() - t0) / 20 * 1e3)
    print("one onnxruntime run, paper MLP, 100 candidates, one full-network delta (ms per run):")
    for name, values in found.items():
        print(f"  {name:58s} min {min(values):.3f}  median {np.median(values):.3f}")


if __name__ == "__main__":
    main()
