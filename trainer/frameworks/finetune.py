"""The final per-domain finetune the published MAMDR numbers include: from Θi = θS + θi, a fresh
inner optimizer (the framework's own kind, ``finetune_lr``) on domain i's training data, early
stopping on its validation AUC. Only the specific parameters move (θS stays shared, so the result is
again a delta θi). Plain SGD at an Adam-sized learning rate (1e-3) barely moved a model trained with
Adam: the finetuned AUCs equalled the untuned ones to four decimals on ml-latest-small."""

from __future__ import annotations

import torch

from trainer.evaluation import EarlyStopping, domain_auc
from trainer.frameworks.base import Framework, make_optimizer, only_trainable


def finetune_deltas(fw: Framework, rng: torch.Generator) -> dict[int, dict[str, torch.Tensor]]:
    """Finetuned θi per domain (the framework's own deltas are left untouched)."""
    cfg = fw.config
    params = fw.params
    names = params.specific_names
    result: dict[int, dict[str, torch.Tensor]] = {}
    original = {d: {n: t.clone() for n, t in params.delta(d).items()} for d in fw.domains}
    with only_trainable(params) as spec, torch.no_grad():
        live = [p.detach() for p in spec]
        theta_s = [t.clone() for t in live]
        try:
            for d in fw.domains:
                torch._foreach_copy_(live, theta_s)
                params.add_delta_(d, live, original[d])
                optimizer = make_optimizer(cfg.inner, spec, cfg.finetune_lr)
                stopper = EarlyStopping(cfg.finetune_patience)
                params.deltas.pop(d, None)  # score domain d with the live (finetuned) Θ

                def val_auc(dom: int = d) -> float:
                    return domain_auc(fw.score, {dom: fw.dataset.val[dom]}, cfg.eval_batch_size)[dom]

                best = [t.clone() for t in live]
                stopper.step(val_auc(), -1)
                for epoch in range(cfg.finetune_epochs):
                    with torch.enable_grad():
                        fw.update(optimizer, fw.domain_batches(d, rng))
                    if stopper.step(val_auc(), epoch):
                        break
                    if stopper.best_epoch == epoch:
                        best = [t.clone() for t in live]
                diff = [b - s for b, s in zip(best, theta_s, strict=True)]
                result[d] = {n: t.clone() for n, t in zip(names, params.cut(d, diff), strict=True)}
                params.deltas[d] = {n: t.clone() for n, t in original[d].items()}
        finally:
            torch._foreach_copy_(live, theta_s)
            params.deltas.clear()
            for d, delta in original.items():
                params.deltas[d] = delta
    return result
