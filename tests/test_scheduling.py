"""`make test` runs on one xdist worker per core: every test that shares a trained network with others must be
scheduled on the worker that trains it, or that network is trained again on another worker."""

from __future__ import annotations

from conftest import GROUPS, group_of


def test_every_test_needing_a_shared_network_is_scheduled_with_its_group(request):
    misplaced = []
    for item in request.session.items:
        needs = {group for group, names in GROUPS.items() if set(names) & set(getattr(item, "fixturenames", ()))}
        module = item.nodeid.split("::", 1)[0]
        if needs and group_of(module) not in needs:
            misplaced.append(f"{item.nodeid}: needs {sorted(needs)}, scheduled as {group_of(module)}")
    assert not misplaced, "\n".join(misplaced)
    assert group_of("tests/test_cli.py") == "smoke" and group_of("tests/test_own_model.py") == "synthetic"
    assert group_of("tests/test_rates.py") is None
