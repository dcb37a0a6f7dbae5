"""The coordinator's pure logic, without MPI: what it concludes from what ranks announce."""
from ringtrain.negotiation import CROSS_CHECK_AFTER, process_set_mismatches

OLD = CROSS_CHECK_AFTER + 1.0
EVERYONE = [0, 1, 2]


def test_a_name_on_a_subset_while_the_others_use_the_global_set_is_a_mismatch():
    claims = {0: [["t", 1, [0, 1], OLD]], 1: [["t", 0, EVERYONE, OLD]], 2: [["t", 0, EVERYONE, OLD]]}
    [(name, text, targets)] = process_set_mismatches(claims)
    assert name == "t"
    assert text == ("Mismatched process sets for 't': it was submitted on process set 0 (ranks [0, 1, 2]) by "
                    "rank(s) [1, 2], on process set 1 (ranks [0, 1]) by rank(s) [0]")
    assert targets == [(0, 1), (1, 0), (2, 0)]


def test_two_subsets_that_should_have_been_one():
    claims = {0: [["s", 1, [0, 1], OLD]], 1: [["s", 2, [1, 2], OLD]], 2: []}
    [(_, text, targets)] = process_set_mismatches(claims)
    assert "on process set 1 (ranks [0, 1]) by rank(s) [0], on process set 2 (ranks [1, 2]) by rank(s) [1]" in text
    assert targets == [(0, 1), (1, 2)]


def test_the_same_name_on_disjoint_sets_is_fine():
    claims = {0: [["grad", 1, [0, 1], OLD]], 1: [], 2: [["grad", 2, [2, 3], OLD]], 3: []}
    assert process_set_mismatches(claims) == []


def test_a_rank_with_the_name_pending_in_both_sets_is_only_late():
    claims = {0: [["g", 1, [0, 1], OLD]], 1: [["g", 2, [1, 2], OLD], ["g", 1, [0, 1], 0.0]], 2: []}
    assert process_set_mismatches(claims) == []


def test_a_young_request_is_not_judged_yet():
    claims = {0: [["t", 1, [0, 1], 0.01]], 1: [["t", 0, EVERYONE, 0.01]], 2: [["t", 0, EVERYONE, 0.01]]}
    assert process_set_mismatches(claims) == []
