"""The compact fingerprint map under the denylist and the epoch map: a collision only refuses more."""

from __future__ import annotations

import pytest

from epochauth import fingerprints
from epochauth.fingerprints import FingerprintMap


def test_names_whose_fingerprints_collide_share_the_larger_of_each_column(
    monkeypatch: pytest.MonkeyPatch,
):
    """Epoch 5 bumped long ago and epoch 1 bumped just now: both read as epoch 5 bumped just now, so
    neither name's tokens pass a check the other's would fail."""
    monkeypatch.setattr(fingerprints, "fingerprint", lambda name: 42)
    table = FingerprintMap(("I", "d"))
    table.put("user\0a", (5, 1000.0))
    table.put("user\0b", (1, 2000.5))
    assert table.get("user\0a") == table.get("user\0b") == (5, 2000.5)
    assert table.get("user\0c") == (5, 2000.5)  # collides too
    assert len(table) == 1


def test_prune_drops_by_the_last_column_and_keeps_the_rest_while_it_moves():
    table = FingerprintMap(("I", "d"))
    for n in range(3000):
        table.put(f"n{n}", (n + 1, 100.0 if n % 3 else 500.0))
    table.prune(200)
    while table.moving:
        assert table.get("n0") == (1, 500.0)
        table.step(500)
    assert len(table) == 1000
    assert table.get("n1") is None and table.get("n3") == (4, 500.0)
    assert table.first("n3") == 4 and table.first("n1") == 0


@pytest.mark.parametrize(
    "seed, keyed_by", [(None, "_siphash_fingerprint"), ("0", "_blake2b_fingerprint")]
)
def test_fingerprints_are_keyed_per_process(seed, keyed_by):
    """str's SipHash is keyed only under hash randomization: with PYTHONHASHSEED fixed, where anyone
    could compute its values, the map falls back to BLAKE2b under a random key."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    if seed is not None:
        env["PYTHONHASHSEED"] = seed
    code = (
        "from epochauth import fingerprints as f; "
        "print(f.fingerprint.__name__, f.fingerprint('user\\x00alice'))"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    assert runs[0][0] == runs[1][0] == keyed_by
    assert runs[0][1] != runs[1][1]  # another process, another key
