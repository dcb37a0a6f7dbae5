"""The coordinator's pure logic, without MPI: what it concludes from what ranks announce."""
from ringtrain.engine.control_messages import Claim
from ringtrain.engine.coordinator import CROSS_CHECK_AFTER, divergence, process_set_mismatches

OLD = CROSS_CHECK_AFTER + 1.0
EVERYONE = (0, 1, 2)


def test_a_name_on_a_subset_while_the_others_use_the_global_set_is_a_mismatch():
    claims = {0: [Claim("t", 1, (0, 1), OLD)], 1: [Claim("t", 0, EVERYONE, OLD)], 2: [Claim("t", 0, EVERYONE, OLD)]}
    [failure] = process_set_mismatches(claims)
    name, text, targets = failure.name, failure.text, failure.targets
    assert name == "t"
    assert text == ("Mismatched process sets for 't': it was submitted on process set 0 (ranks [0, 1, 2]) by "
                    "rank(s) [1, 2], on process set 1 (ranks [0, 1]) by rank(s) [0]")
    assert targets == ((0, 1), (1, 0), (2, 0))


def test_two_subsets_that_should_have_been_one():
    claims = {0: [Claim("s", 1, (0, 1), OLD)], 1: [Claim("s", 2, (1, 2), OLD)], 2: []}
    [failure] = process_set_mismatches(claims)
    text, targets = failure.text, failure.targets
    assert "on process set 1 (ranks [0, 1]) by rank(s) [0], on process set 2 (ranks [1, 2]) by rank(s) [1]" in text
    assert targets == ((0, 1), (1, 2))


def test_the_same_name_on_disjoint_sets_is_fine():
    claims = {0: [Claim("grad", 1, (0, 1), OLD)], 1: [], 2: [Claim("grad", 2, (2, 3), OLD)], 3: []}
    assert process_set_mismatches(claims) == []


def test_a_rank_with_the_name_pending_in_both_sets_is_only_late():
    claims = {0: [Claim("g", 1, (0, 1), OLD)], 1: [Claim("g", 2, (1, 2), OLD), Claim("g", 1, (0, 1), 0.0)], 2: []}
    assert process_set_mismatches(claims) == []


def test_a_young_request_is_not_judged_yet():
    claims = {0: [Claim("t", 1, (0, 1), 0.01)], 1: [Claim("t", 0, EVERYONE, 0.01)], 2: [Claim("t", 0, EVERYONE, 0.01)]}
    assert process_set_mismatches(claims) == []


# --- Coordinator.process: what every rank is told, from what each announced -----------------
from ringtrain.engine.control_messages import Announcement, Failure, FailureKind, Response, RoundMessage  # noqa: E402
from ringtrain.engine.coordinator import Coordinator, StallInspector  # noqa: E402
from ringtrain.engine.response_cache import ResponseCache  # noqa: E402

F32_4 = ["allreduce", 2, [[4]], 1, -1, 1.0, 1.0]  # a signature: allreduce, float32, shape (4,), Average


def coordinator(size=3, check=0.0, shutdown=0.0):
    return Coordinator(size, StallInspector(check, shutdown))


def announce(*pairs):
    return RoundMessage([Announcement(name, signature) for name, signature in pairs])


def test_a_name_every_rank_announced_is_ready_with_a_cache_bit():
    response = coordinator().process({r: announce(("g", F32_4)) for r in range(3)}, ResponseCache(64))
    assert [(r.name, r.bit) for r in response.ready] == [("g", 2)] and response.failures == []


def test_a_name_some_ranks_announced_waits_for_the_others():
    c = coordinator()
    assert c.process({0: announce(("g", F32_4)), 1: RoundMessage(), 2: RoundMessage()}, ResponseCache(64)).ready == []
    assert [r.name for r in c.process({0: RoundMessage(), 1: announce(("g", F32_4)), 2: announce(("g", F32_4))},
                                      ResponseCache(64)).ready] == ["g"]


def test_a_shape_mismatch_fails_on_every_rank_naming_both():
    other = ["allreduce", 2, [[5]], 1, -1, 1.0, 1.0]
    response = coordinator(2).process({0: announce(("g", F32_4)), 1: announce(("g", other))}, ResponseCache(64))
    [failure] = response.failures
    assert failure.kind is FailureKind.MISMATCH and failure.ranks is None
    assert failure.text == "Mismatched allreduce shapes for 'g': rank 0 has (4,), but rank 1 has (5,)"


def test_a_stall_is_given_up_on_as_a_stall_and_owed_to_the_latecomer():
    c = coordinator(2, shutdown=1e-9)
    assert c.process({0: announce(("g", F32_4)), 1: RoundMessage()}, ResponseCache(64)).failures == []  # just seen
    [failure] = c.process({0: RoundMessage(), 1: RoundMessage()}, ResponseCache(64)).failures
    assert failure.kind is FailureKind.STALL and "waiting for ranks 1" in failure.text
    late = c.process({0: RoundMessage(), 1: announce(("g", F32_4))}, ResponseCache(64))  # rank 1 gets there at last
    assert [(f.name, f.kind, f.ranks) for f in late.failures] == [("g", FailureKind.STALL, (1,))]


def test_messages_and_responses_survive_the_wire():
    message = RoundMessage([Announcement("g", F32_4)], [Failure("h", FailureKind.DUPLICATE, "twice")], True)
    assert RoundMessage.from_wire(message.to_wire()) == message
    response = coordinator(1).process({0: message}, ResponseCache(64))
    assert Response.from_wire(response.to_wire()) == response


def test_divergence_needs_every_rank_blocked_and_nothing_that_can_complete():
    claims = {0: [Claim("check", 0, EVERYONE, OLD, "allreduce")], 1: [Claim("next", 0, EVERYONE, OLD, "broadcast")],
              2: [Claim("check", 0, EVERYONE, OLD, "allreduce")]}
    everyone = {0: True, 1: True, 2: True}
    fingerprint, failures = divergence(claims, everyone, 3)
    assert [(f.name, f.targets) for f in failures] == [("check", ((0, 0), (2, 0))), ("next", ((1, 0),))]
    assert failures[0].text == failures[1].text
    assert ("rank(s) 0, 2 wait for allreduce 'check', which rank(s) 1 did not submit; rank(s) 1 wait for "
            "broadcast 'next', which rank(s) 0, 2 did not submit") in failures[0].text
    assert divergence(claims, everyone, 3)[0] == fingerprint  # the same situation, recognised again
    # a rank that is not waiting may still submit what the others wait for
    assert divergence(claims, {**everyone, 1: False}, 3) is None
    # a rank with nothing pending is free to submit
    assert divergence({**claims, 1: []}, everyone, 3) is None
    # a name every member holds completes: no divergence (yet)
    both = {**claims, 1: [Claim("check", 0, EVERYONE, OLD, "allreduce"), Claim("next", 0, EVERYONE, OLD, "broadcast")]}
    assert divergence(both, everyone, 3) is None
    # process sets: each name judged against its own set's members
    sets = {0: [Claim("a", 1, (0, 1), OLD, "allreduce")], 1: [Claim("b", 1, (0, 1), OLD, "allgather")],
            2: [Claim("c", 2, (2,), OLD, "allreduce")]}
    assert divergence(sets, everyone, 3) is None  # rank 2's 'c' on its own set can complete
    sets[2] = [Claim("d", 0, EVERYONE, OLD, "barrier")]
    assert "allgather 'b' (process set 1), which rank(s) 0 did not submit" in divergence(sets, everyone, 3)[1][0].text


def test_the_response_cache_keeps_a_bit_per_signature_and_reuses_bits():
    """A name may hold a bit for each of a few signatures (unnamed names recur with tensors of
    several shapes in turn), the oldest giving way beyond the limit; freed bits come back; two
    caches that apply the same assignments stay identical (every rank's cache must)."""
    from ringtrain.engine.response_cache import FIRST_TENSOR_BIT, SIGNATURES_PER_NAME

    def sig(n):
        return ["allreduce", 2, [[n]], 1, -1, 1.0, 1.0]

    coordinator_cache, other = ResponseCache(64), ResponseCache(64)

    def give(name, signature, taken=()):
        bit = coordinator_cache.choose_bit(name, signature, set(taken))
        for cache in (coordinator_cache, other):
            cache.assign(name, signature, bit)
        return bit

    a, b, c = give("x", sig(1)), give("x", sig(2)), give("x", sig(3))
    assert (a, b, c) == (FIRST_TENSOR_BIT, FIRST_TENSOR_BIT + 1, FIRST_TENSOR_BIT + 2)
    assert [coordinator_cache.lookup("x", sig(n)) for n in (1, 2, 3, 4)] == [(a, True), (b, True), (c, True),
                                                                            (None, False)]
    assert give("x", sig(2)) == b  # renegotiated (a rank fell back): the same bit again
    bits = [give("x", sig(n)) for n in range(4, SIGNATURES_PER_NAME + 2)]
    assert bits[-1] == a and coordinator_cache.lookup("x", sig(1)) == (None, False)  # the oldest gave way
    assert len(coordinator_cache.bits_of["x"]) == SIGNATURES_PER_NAME
    coordinator_cache.evict("x"), other.evict("x")
    assert coordinator_cache.lookup("x", sig(2)) == (None, False)
    freed = give("y", sig(1))
    assert freed == FIRST_TENSOR_BIT and coordinator_cache.next_bit == FIRST_TENSOR_BIT + SIGNATURES_PER_NAME
    # bits given in one response are distinct before any of them is assigned
    first = coordinator_cache.choose_bit("p", sig(1), set())
    assert coordinator_cache.choose_bit("q", sig(1), {first}) != first
    assert (coordinator_cache.entry, coordinator_cache.bits_of, coordinator_cache.free) == (
        other.entry, other.bits_of, other.free)
    full = ResponseCache(FIRST_TENSOR_BIT + 2)
    for name in ("z", "v", "z"):  # z renegotiated: its bit again, now the newest assignment
        full.assign(name, sig(1), full.choose_bit(name, sig(1), set()))
    assert full.choose_bit("w", sig(1), set()) == full.bits_of["v"][0]  # full: the oldest assignment gives way
    full.assign("w", sig(1), full.choose_bit("w", sig(1), set()))
    assert "v" not in full.bits_of and full.lookup("z", sig(1))[1] and full.lookup("w", sig(1))[1]
    assert ResponseCache(FIRST_TENSOR_BIT).choose_bit("w", sig(1), set()) is None  # capacity 0: nothing cached


def test_the_response_cache_reports_every_change_of_its_bits():
    """The persistent lane (csrc/persistent_lane.c) trusts a bit it learned only while that bit
    has not changed hands since, so every assignment and eviction must be reported with the
    bits it changed, and the bit vector's length once made (the lane's rounds send that many
    words)."""
    cache, seen = ResponseCache(256), []
    cache.on_change = lambda generation, words, bits: seen.append((generation, words, bits))
    cache.assign("g", F32_4, 2)
    cache.assign("h", F32_4, 64)  # the second word's first bit
    cache.assign("h", F32_4, 5)  # moved: both bits changed hands
    cache.evict("g")
    cache.evict("never assigned")  # nothing held: nothing changed
    assert seen == [(1, 1, (2,)), (2, 2, (64,)), (3, 2, (5, 64)), (4, 2, (2,))] and cache.generation == 4


def test_giving_a_pair_the_bit_it_holds_changes_nothing():
    cache = ResponseCache(64)
    cache.assign("g", F32_4, 2)
    generation = cache.generation
    cache.assign("g", F32_4, 2)  # announced again after waiting for a late rank
    assert cache.generation == generation and cache.lookup("g", F32_4) == (2, True)
    assert cache.assigned == {2: None} and cache.bits_of == {"g": [2]}
