from __future__ import annotations

from face_dedup.domain import Notification, batch_notifications


def note(tenant: str, case_id: str) -> Notification:
    return Notification("case.opened", tenant, case_id, f"https://review/#case={case_id}")


def test_a_single_case_is_passed_on_as_it_is() -> None:
    assert batch_notifications([note("a", "c1")], "https://review/") == [note("a", "c1")]


def test_many_cases_become_one_message_per_tenant() -> None:
    batched = batch_notifications(
        [note("a", "c1"), note("b", "c9"), note("a", "c2"), note("a", "c1")], "https://review/"
    )
    by_tenant = {n.tenant: n for n in batched}
    assert by_tenant["a"].kind == "cases.opened" and by_tenant["a"].case_ids == ("c1", "c2")
    assert by_tenant["a"].link == "https://review/" and by_tenant["a"].case_id == ""
    assert by_tenant["b"] == note("b", "c9")


def test_nothing_in_nothing_out() -> None:
    assert batch_notifications([], "x") == []
