"""The SQLite label store (rlkit2/labels.py): round trip, leases, the bad submissions a web page must reject
without changing anything, concurrent raters losing nothing, and a reopened store keeping every answer."""

import threading

import pytest

from rlkit2.labels import LabelError, LabelStore


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def store_with_pairs(tmp_path, count=3, **kwargs):
    store = LabelStore(tmp_path / "labels.sqlite", **kwargs)
    store.add_pairs([(i, f"clips/{i}a.mp4", f"clips/{i}b.mp4", float(i)) for i in range(count)])
    return store


def test_round_trip_and_answers_become_labels(tmp_path):
    store = store_with_pairs(tmp_path)
    answers = ["left", "equal", "cant_tell"]
    for answer in answers:
        lease = store.lease("ana")
        store.submit(lease.pair_id, lease.token, answer, "ana", shown=1.0)
    labels = store.labels_since(0)
    assert [l.pair_id for l in labels] == [2, 1, 0]  # the highest priority first
    assert [l.mu for l in labels] == [1.0, 0.5, None]  # can't tell is kept but is not a label
    assert store.progress() == {"pairs": 3, "answered": 3, "labels": 2, "waiting": 0}
    assert store.labels_since(labels[1].seq) == labels[2:]  # the trainer reads only what is new
    assert store.lease("ana") is None


def test_two_raters_never_hold_the_same_pair_and_expired_leases_return(tmp_path):
    clock = Clock()
    store = store_with_pairs(tmp_path, count=2, lease_seconds=120, clock=clock)
    a, b = store.lease("ana"), store.lease("ben")
    assert a.pair_id != b.pair_id and store.lease("cleo") is None
    clock.now += 121  # ana walked away
    c = store.lease("cleo")
    assert c.pair_id in (a.pair_id, b.pair_id)
    with pytest.raises(LabelError) as late:
        store.submit(a.pair_id, a.token, "left", "ana")
    assert late.value.status == 409 and store.progress()["answered"] == 0


@pytest.mark.parametrize("change,status", [
    ({"answer": "up"}, 400), ({"pair_id": "1; DROP TABLE labels"}, 400), ({"pair_id": 99}, 404),
    ({"token": "forged"}, 409), ({"rater": "mallory"}, 409),
    ({"pair_id": 2**70}, 400), ({"shown": float("nan")}, 400), ({"shown": float("inf")}, 400), ({"shown": -1.0}, 400),
])
def test_bad_submissions_get_the_right_status_and_change_nothing(tmp_path, change, status):
    store = store_with_pairs(tmp_path)
    lease = store.lease("ana")
    args = {"pair_id": lease.pair_id, "token": lease.token, "answer": "left", "rater": "ana", **change}
    with pytest.raises(LabelError) as err:
        store.submit(**args)
    assert err.value.status == status
    assert store.progress()["answered"] == 0
    store.submit(lease.pair_id, lease.token, "left", "ana")  # the genuine answer still goes through


def test_a_replayed_submission_is_rejected(tmp_path):
    store = store_with_pairs(tmp_path)
    lease = store.lease("ana")
    store.submit(lease.pair_id, lease.token, "right", "ana")
    with pytest.raises(LabelError) as err:
        store.submit(lease.pair_id, lease.token, "left", "ana")
    assert err.value.status == 409
    assert [l.answer for l in store.labels_since(0)] == ["right"]


def test_concurrent_raters_lose_nothing(tmp_path):
    store = store_with_pairs(tmp_path, count=200)
    errors = []

    def rater(name):
        try:
            while (lease := store.lease(name)) is not None:
                store.submit(lease.pair_id, lease.token, "left", name)
        except Exception as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=rater, args=(f"rater{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    labels = store.labels_since(0)
    assert sorted(l.pair_id for l in labels) == list(range(200))  # every pair answered exactly once
    assert len({l.rater for l in labels}) > 1


def test_a_reopened_store_keeps_every_answer(tmp_path):
    store = store_with_pairs(tmp_path)
    lease = store.lease("ana")
    store.submit(lease.pair_id, lease.token, "equal", "ana")
    again = LabelStore(tmp_path / "labels.sqlite")
    assert [(l.pair_id, l.mu) for l in again.labels_since(0)] == [(lease.pair_id, 0.5)]
    again.add_pairs([(10, "a", "b", 0.0)])
    assert again.progress()["pairs"] == 4


def test_new_pairs_get_ids_after_every_stored_id_even_from_concurrent_writers(tmp_path):
    """add_new_pairs allocates ids in the insert's transaction: after ids chosen by a caller (an earlier session's
    pairs) and never the same id twice when two writers add pairs at once."""
    store = store_with_pairs(tmp_path, count=3)
    assert store.add_new_pairs([("a.mp4", "b.mp4", 0.0)]) == [3]
    got = []

    def writer(name):
        mine = LabelStore(tmp_path / "labels.sqlite")
        for k in range(20):
            got.extend(mine.add_new_pairs([(f"{name}{k}a.mp4", f"{name}{k}b.mp4", 0.0)] * 2))

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(4, 84)) and store.progress()["pairs"] == 84


def test_a_rater_holds_at_most_max_leases_per_rater_until_answered_or_expired(tmp_path):
    clock = Clock()
    store = store_with_pairs(tmp_path, count=5, clock=clock, lease_seconds=120, max_leases_per_rater=2)
    first, _ = store.lease("ana"), store.lease("ana")
    with pytest.raises(LabelError) as err:
        store.lease("ana")
    assert err.value.status == 429 and "at most 2" in str(err.value)
    assert store.lease("ben") is not None  # the cap is per rater
    store.submit(first.pair_id, first.token, "left", "ana")
    assert store.lease("ana") is not None  # answering frees a slot
    clock.now += 121
    assert store.lease("ana") is not None and store.lease("ana") is not None  # expired leases do not count


def test_the_end_of_a_human_labeled_run_says_how_many_pairs_people_answered(tmp_path):
    from rlkit2.cli import human_label_summary

    assert human_label_summary(tmp_path) is None  # a run without people: nothing to say
    store = LabelStore(tmp_path / "labels.sqlite")
    store.add_new_pairs([(f"a{i}.mp4", f"b{i}.mp4", 1.0) for i in range(4)])
    for answer in ("left", "cant_tell", "equal"):
        lease = store.lease("rater")
        store.submit(lease.pair_id, lease.token, answer, "rater")
    assert human_label_summary(tmp_path) == ('human labels  : 3 of 4 pairs answered (2 usable, 1 "can\'t tell"), '
                                             '1 never answered')
