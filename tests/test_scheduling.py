"""`make test` runs on one xdist worker per core: every test that shares a trained network with others must be
scheduled on the worker that trains it, or that network is trained again on another worker."""

from __future__ import annotations

from conftest import GROUPS, schedule_unit


def test_every_test_needing_a_shared_network_is_scheduled_with_its_group(request):
    """Checked against pytest's own fixture closures of the tests this run collected."""
    misplaced = []
    for item in request.session.items:
        needs = {group for group, names in GROUPS.items() if set(names) & set(getattr(item, "fixturenames", ()))}
        if needs and schedule_unit(item.nodeid) not in needs:
            misplaced.append(f"{item.nodeid}: needs {sorted(needs)}, scheduled in {schedule_unit(item.nodeid)}")
    assert not misplaced, "\n".join(misplaced)
    assert schedule_unit("tests/test_defense.py::test_threshold_controls_what_is_flagged") == "smoke"
    assert schedule_unit("tests/test_own_model.py::test_fit_guardian_reuses_its_folder") == "synthetic"
    alone = "tests/test_attacks.py::test_fgsm_respects_eps"
    assert schedule_unit(alone) == alone
