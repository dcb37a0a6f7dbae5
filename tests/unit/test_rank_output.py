"""Per-rank lines out of mpiexec's merged output (ringtrain.launch.rank_output.RankLines).

mpiexec runs with -prepend-pattern PREPEND_PATTERN: every chunk a rank writes arrives behind
"\\x1e<rank>\\x1f"; a read of the pipe can end anywhere, even inside a marker or a character."""
from ringtrain.launch.mpiexec import mpiexec_command
from ringtrain.launch.rank_output import MPIEXEC, PREPEND_PATTERN, RankLines


def marked(rank, text):
    """What mpiexec writes for a chunk of `rank`'s output (hydra expands %r to the rank)."""
    return PREPEND_PATTERN.replace("%r", str(rank)).encode() + text.encode()


def test_the_marker_mpiexec_is_given_is_the_one_the_parser_reads():
    argv = mpiexec_command(2, ["python"])
    assert argv[argv.index("-prepend-pattern") + 1] == PREPEND_PATTERN == "\x1e%r\x1f"
    assert RankLines().feed(marked(13, "hi\n")) == [(13, "hi")]


def test_whole_lines_come_out_with_their_rank():
    lines = RankLines()
    assert lines.feed(marked(0, "one\n") + marked(1, "uno\n") + marked(0, "two\n")) == [
        (0, "one"), (1, "uno"), (0, "two")]


def test_a_chunk_with_several_lines_gives_them_all():
    assert RankLines().feed(marked(2, "a\nb\nc\n")) == [(2, "a"), (2, "b"), (2, "c")]


def test_a_chunk_that_ends_mid_line_waits_for_the_rest():
    lines = RankLines()
    assert lines.feed(marked(0, "epoch 1 lo")) == []
    assert lines.feed(marked(0, "ss 0.5\nepoch 2")) == [(0, "epoch 1 loss 0.5")]
    assert lines.feed(marked(0, " loss 0.4\n")) == [(0, "epoch 2 loss 0.4")]


def test_a_read_that_cuts_a_chunk_continues_the_same_rank():
    lines = RankLines()
    assert lines.feed(marked(3, "hel")) == []
    assert lines.feed(b"lo\n") == [(3, "hello")]  # no marker: the rest of rank 3's chunk


def test_interleaved_ranks_each_get_their_own_line_back():
    lines = RankLines()
    out = lines.feed(marked(0, "rank zero ") + marked(1, "rank one ") + marked(0, "says hi\n"))
    assert out == [(0, "rank zero says hi")]
    assert lines.feed(marked(1, "says hello\n")) == [(1, "rank one says hello")]


def test_a_marker_cut_by_the_read_is_kept_for_the_next():
    data = marked(12, "twelve\n") + marked(3, "three\n")
    for cut in range(1, len(data)):  # every place a read could end
        lines = RankLines()
        assert lines.feed(data[:cut]) + lines.feed(data[cut:]) == [(12, "twelve"), (3, "three")], cut


def test_a_marker_cut_over_three_reads():
    lines = RankLines()
    assert lines.feed(b"\x1e") == [] and lines.feed(b"4") == [] and lines.feed(b"2\x1fok\n") == [(42, "ok")]


def test_a_character_cut_by_the_read_is_decoded_whole():
    data = marked(0, "café ✓\n")
    for cut in range(len(data) - 6, len(data)):  # inside é and inside ✓
        lines = RankLines()
        assert lines.feed(data[:cut]) + lines.feed(data[cut:]) == [(0, "café ✓")], cut


def test_bytes_that_are_not_utf8_are_replaced_not_fatal():
    assert RankLines().feed(b"\x1e0\x1fbad \xff byte\n") == [(0, "bad \ufffd byte")]


def test_mpiexec_talking_before_any_rank_is_mpiexec():
    lines = RankLines()
    assert lines.feed(b"[mpiexec@h1] launch failed\n\n") == [(MPIEXEC, "[mpiexec@h1] launch failed"),
                                                             (MPIEXEC, "")]
    assert list(lines.last[MPIEXEC]) == ["[mpiexec@h1] launch failed"]


def test_hydras_banner_after_rank_output_is_mpiexec_not_the_last_rank():
    lines = RankLines()
    lines.feed(marked(1, "Traceback (most recent call last):\n"))
    banner = (b"===================================================================================\n"
              b"=   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES\n"
              b"=   EXIT CODE: 9\n"
              b"===================================================================================\n"
              b"YOUR APPLICATION TERMINATED WITH THE EXIT STRING: Killed (signal 9)\n"
              b"This typically refers to a problem with your application.\n"
              b"Please see the FAQ page for debugging suggestions\n")
    out = lines.feed(banner)
    assert [source for source, _ in out] == [MPIEXEC] * 7
    assert out[1] == (MPIEXEC, "=   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES")
    assert list(lines.last[1]) == ["Traceback (most recent call last):"]  # the banner is not rank 1's output


def test_a_ranks_empty_lines_are_its_own():
    assert RankLines().feed(marked(0, "a\n\nb\n")) == [(0, "a"), (0, ""), (0, "b")]


def test_flush_gives_every_unterminated_last_line_once():
    lines = RankLines()
    assert lines.feed(marked(0, "done") + marked(1, "all\nalmost")) == [(1, "all")]
    assert lines.flush() == [(0, "done"), (1, "almost")]
    assert lines.flush() == []
    assert list(lines.last[0]) == ["done"] and list(lines.last[1]) == ["all", "almost"]


def test_flush_after_whole_lines_gives_nothing():
    lines = RankLines()
    lines.feed(marked(0, "x\n"))
    assert lines.flush() == []


def test_each_rank_keeps_its_last_lines_for_error_reports():
    lines = RankLines(keep=2)
    for n in range(5):
        lines.feed(marked(0, f"zero {n}\n") + marked(1, f"one {n}\n"))
    assert list(lines.last[0]) == ["zero 3", "zero 4"]
    assert list(lines.last[1]) == ["one 3", "one 4"]
