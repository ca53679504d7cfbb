"""ResourceJoin: windows are judged when every expected contributor reported, in any order."""

import itertools
import pickle
import random

from app.core.join import ResourceJoin


def feed(join: ResourceJoin[str], shares: list[tuple[str, int]]) -> list[tuple[int, list[str]]]:
    out = []
    for name, index in shares:
        for ready in join.add(name, index, f"{name}@{index}"):
            out.append((ready.index, sorted(ready.shares)))
    return out


SHARES = [(name, t) for t in range(10) for name in ("a", "b", "c")]


def test_declared_contributors_are_waited_for_in_any_interleaving() -> None:
    reference = feed(ResourceJoin(declared=frozenset("abc")), SHARES)
    assert reference == [(t, ["a", "b", "c"]) for t in range(10)]
    # Whole streams skewed far apart (one partition caught up before another): same result.
    by_name = {n: [s for s in SHARES if s[0] == n] for n in "abc"}
    for order in itertools.permutations("abc"):
        skewed = [s for n in order for s in by_name[n]]
        assert feed(ResourceJoin(declared=frozenset("abc")), skewed) == reference


def test_newcomers_join_after_the_delay_and_are_then_waited_for() -> None:
    join: ResourceJoin[str] = ResourceJoin(join_delay=2)
    out = feed(join, [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("a", 3)])
    # Nobody is expected in their first two windows (judged empty, whatever the order; b's
    # shares arrive too late for them but still register b); from window 2 both are.
    assert out == [(0, []), (1, [])]
    assert join.late_shares == 2
    assert join.blocking() == ["b"]
    assert feed(join, [("b", 2)]) == [(2, ["a", "b"])]


def test_depart_unblocks_and_a_returning_contributor_rejoins() -> None:
    join: ResourceJoin[str] = ResourceJoin(declared=frozenset("ab"))
    assert feed(join, [("a", 0), ("a", 1), ("a", 2)]) == []
    assert join.blocking() == ["b"]
    ready = join.depart(["b"])
    assert [(r.index, sorted(r.shares)) for r in ready] == [(0, ["a"]), (1, ["a"]), (2, ["a"])]
    assert feed(join, [("b", 1)]) == []  # too late for window 1: counted, not used
    assert join.late_shares == 1
    assert feed(join, [("b", 3), ("a", 3)]) == [(3, ["a", "b"])]


def test_event_time_idleness_is_a_safety_net() -> None:
    join: ResourceJoin[str] = ResourceJoin(declared=frozenset("ab"), idle_windows=3)
    out = feed(join, [("a", t) for t in range(6)])
    # b never reported: each window waits until a is idle_windows past it.
    assert out == [(0, ["a"]), (1, ["a"]), (2, ["a"])]
    assert [(r.index, sorted(r.shares)) for r in join.drain_all()] == [
        (3, ["a"]),
        (4, ["a"]),
        (5, ["a"]),
    ]


class _ListJoin(ResourceJoin[str]):
    """The join deciding from the full waiting list, as `_drain` did before `_any_waiting`."""

    def _any_waiting(self, index: int) -> bool:
        return bool(self._waiting_for(index))


def test_the_early_exit_test_decides_like_the_waiting_list() -> None:
    """`_drain` asks `_any_waiting`, which stops early: same windows, same contributors."""
    rng = random.Random(7)
    names = [f"s{k}" for k in range(8)]
    for trial in range(40):
        declared = frozenset(rng.sample(names, trial % 4))
        joins = [ResourceJoin[str](declared=declared, idle_windows=6), _ListJoin(declared, 2, 6)]
        clock = dict.fromkeys(names, 0)
        for _ in range(200):
            if rng.random() < 0.05:
                gone = rng.sample(names, 2)
                outs = [j.depart(gone) for j in joins]
            else:
                name = rng.choice(names)
                clock[name] += rng.choice((1, 1, 1, 2, 9))
                outs = [j.add(name, clock[name], name) for j in joins]
            assert outs[0] == outs[1]
        assert joins[0].drain_all() == joins[1].drain_all()


def test_a_join_kept_without_its_pending_shares_is_restored_from_their_sources() -> None:
    """A checkpoint keeps the join `without_pending`; re-reading the shares from
    `refill_from` on and `restore`-ing each puts back exactly what was pending (duplicates,
    late shares, departures and newcomers included), and both joins then go on alike."""
    rng = random.Random(11)
    names = [f"s{k}" for k in range(6)]
    restored_some = 0
    for trial in range(200):
        declared = frozenset(names[: trial % 4])
        clock = dict.fromkeys(names, 0)
        lag = rng.choice(names)  # one contributor far behind the others, as a slow partition
        log: list[tuple[str, str, int]] = []  # (kind, name, index) in source order
        for _ in range(rng.randrange(5, 120)):
            roll = rng.random()
            if roll < 0.03:
                log.append(("depart", rng.choice(names), 0))
                continue
            name = rng.choice(names)
            if roll < 0.1 and clock[name]:  # sent again (a replay upstream)
                log.append(("share", name, rng.randrange(clock[name])))
                continue
            if name == lag and rng.random() < 0.8:
                continue
            clock[name] += rng.choice((1, 1, 2))
            log.append(("share", name, clock[name]))

        def apply(join: ResourceJoin[str], entries: list[tuple[int, tuple[str, str, int]]]) -> list:
            out = []
            for source, (kind, name, index) in entries:
                if kind == "depart":
                    out.append(join.depart([name]))
                else:
                    out.append(join.add(name, index, f"{name}@{index}#{source}", source))
            return out

        entries = list(enumerate(log))
        cut = rng.randrange(len(entries) + 1)
        join: ResourceJoin[str] = ResourceJoin(declared=declared, idle_windows=30)
        apply(join, entries[:cut])
        start = join.refill_from()
        assert (start is None) == (not join.pending)
        kept = pickle.loads(pickle.dumps(join.without_pending()))
        assert (kept.pending == {} and join.pending == {}) or join.pending
        for source, (kind, name, index) in entries[:cut]:
            if kind == "share" and start is not None and source >= start:
                kept.restore(name, index, f"{name}@{index}#{source}")
        assert kept == join
        restored_some += bool(join.pending)
        assert apply(kept, entries[cut:]) == apply(join, entries[cut:])
        assert kept == join
    assert restored_some > 50


def test_a_pending_share_without_a_source_cannot_be_left_out() -> None:
    join: ResourceJoin[str] = ResourceJoin(declared=frozenset("ab"))
    join.add("a", 0, "a@0", 10)
    assert join.refill_from() == 10
    join.add("a", 1, "a@1")  # no source: nothing to read it back from
    assert join.refill_from() is None
    join.add("b", 1, "b@1", 12)
    assert join.pending == {} and join.sources == {}
