"""The Amazon 2018 5-core loader on the shared sample (5 category files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.data import build_benchmark_table, load_dataset


def test_amazon_categories_become_five_domains(shared_data: Path) -> None:
    folder = shared_data / "amazon18_5core_small"
    ds = load_dataset("amazon", data_dir=folder, seed=0)
    assert ds.domains == ["amazon_fashion", "all_beauty", "appliances", "gift_cards", "magazine_subscriptions"]
    assert ds.n_users == 2244 and ds.n_items == 469  # the sample's source notes (beside its files, not in the repo)
    assert ds.user_ids[0].startswith("A") and len(ds.item_ids[0]) == 10  # reviewerID, asin
    positives = {name: 0 for name in ds.domains}
    for d, name in enumerate(ds.domains):
        positives[name] = int(sum(s[d].label.sum() for s in (ds.train, ds.val, ds.test)))
        assert 0.2 <= ds.ctr_ratio[d] <= 0.5
    # duplicates removed: unique (user, item) pairs per category, from the sample's source notes
    assert positives == {"all_beauty": 4092, "amazon_fashion": 3042, "gift_cards": 2965,
                         "magazine_subscriptions": 2302, "appliances": 183}


def test_amazon_accepts_the_shared_root_and_the_default_env(shared_data: Path, monkeypatch) -> None:
    via_root = load_dataset("amazon", data_dir=shared_data, seed=1)
    monkeypatch.setenv("MAMDR_SHARED_DATA", str(shared_data))
    via_env = load_dataset("amazon", seed=1)
    via_path = load_dataset(str(shared_data / "amazon18_5core_small"), seed=1)
    for other in (via_env, via_path):
        assert other.domains == via_root.domains
        for d in range(via_root.n_domains):
            np.testing.assert_array_equal(other.test[d].item, via_root.test[d].item)


def test_amazon_negatives_are_unclicked_items_of_the_category(shared_data: Path) -> None:
    table = build_benchmark_table("amazon", data_dir=shared_data, seed=0)
    src = table.source
    clicked = set(zip(src.user.tolist(), src.item.tolist(), strict=True))
    neg = table.label == 0
    assert not clicked & set(zip(table.user[neg].tolist(), table.item[neg].tolist(), strict=True))
    item_domain = dict(zip(src.item.tolist(), src.domain.tolist(), strict=True))
    assert all(item_domain[i] == d for d, i in zip(table.domain[neg].tolist(), table.item[neg].tolist(),
                                                  strict=True))
