"""Every setting parsed once into one typed object (ringtrain.config.Config): init() keywords,
RINGTRAIN_* variables, Horovod's HOROVOD_* spellings, and what a bad value is told."""
import dataclasses

import pytest

from ringtrain.config import Config
from ringtrain.errors import ConfigurationError


def config(overrides=None, **environ):
    return Config.from_sources(overrides, environ=environ)


def test_no_settings_give_the_documented_defaults():
    c = config()
    assert c == Config()
    assert (c.fusion_threshold, c.segment_bytes, c.small_allreduce_threshold) == (64 << 20, 1 << 20, 8 << 10)
    assert (c.cycle_time, c.stall_check_time, c.stall_shutdown_time, c.progress_timeout) == (1.0, 60.0, 0.0, 30.0)
    assert (c.cache_capacity, c.timeline, c.log_level, c.autotune) == (4096, "", "", False)
    assert c.notices == ()


def test_the_settings_are_one_frozen_object():
    with pytest.raises(dataclasses.FrozenInstanceError):
        config().fusion_threshold = 1


def test_environment_values_become_typed_values():
    c = config(RINGTRAIN_CYCLE_TIME="5", RINGTRAIN_CACHE_CAPACITY=" 12 ", RINGTRAIN_AUTOTUNE="yes",
               RINGTRAIN_SHARED_MEMORY="off", RINGTRAIN_TIMELINE="/tmp/t.json", RINGTRAIN_STALL_SHUTDOWN_TIME="2.5")
    assert c.cycle_time == 5.0 and type(c.cycle_time) is float
    assert c.cache_capacity == 12 and type(c.cache_capacity) is int
    assert c.autotune is True and c.shared_memory is False
    assert c.timeline == "/tmp/t.json" and c.stall_shutdown_time == 2.5


def test_byte_sizes_take_k_m_g_suffixes_in_powers_of_1024():
    def fusion(text):
        return config(RINGTRAIN_FUSION_THRESHOLD=text).fusion_threshold

    assert fusion("65536") == 65536
    assert fusion("64K") == 64 * 1024
    assert fusion("64M") == 64 * 1024 * 1024
    assert fusion("2g") == 2 * 1024 ** 3
    assert fusion(" 1M ") == 1024 * 1024
    assert fusion("0") == 0  # fusion off


@pytest.mark.parametrize("text", ["1.5M", "64MB", "-1", "-1K", "", "M", "lots"])
def test_a_bad_byte_size_names_the_variable_the_value_and_what_was_expected(text):
    with pytest.raises(ConfigurationError) as raised:
        config(RINGTRAIN_FUSION_THRESHOLD=text)
    assert str(raised.value) == (f"RINGTRAIN_FUSION_THRESHOLD={text!r} is not a valid fusion threshold "
                                 "(expected a non-negative number of bytes, e.g. 65536 or 64K)")


def test_booleans_accept_the_usual_spellings_only():
    for text, value in [("1", True), ("true", True), ("Yes", True), ("ON", True),
                        ("0", False), ("false", False), ("no", False), ("off", False), ("", False)]:
        assert config(RINGTRAIN_AUTOTUNE=text).autotune is value, text
    with pytest.raises(ConfigurationError, match=r"^RINGTRAIN_AUTOTUNE='2' is not a valid autotune "
                                                 r"\(expected a boolean \(1/0, true/false\)\)$"):
        config(RINGTRAIN_AUTOTUNE="2")


@pytest.mark.parametrize("text", ["-1", "nan", "inf", "soon"])
def test_times_must_be_finite_and_not_negative(text):
    with pytest.raises(ConfigurationError) as raised:
        config(RINGTRAIN_STALL_CHECK_TIME=text)
    assert str(raised.value) == (f"RINGTRAIN_STALL_CHECK_TIME={text!r} is not a valid stall check time "
                                 "(expected a non-negative number)")


def test_counts_must_be_whole_and_not_negative():
    for text in ("1.0", "-3", "many"):
        with pytest.raises(ConfigurationError, match=r"is not a valid cache capacity \(expected a non-negative integer\)"):
            config(RINGTRAIN_CACHE_CAPACITY=text)


def test_log_levels_take_horovods_names():
    assert config(RINGTRAIN_LOG_LEVEL="trace").log_level == "DEBUG"
    assert config(RINGTRAIN_LOG_LEVEL="Warning").log_level == "WARNING"
    assert config(RINGTRAIN_LOG_LEVEL="FATAL").log_level == "CRITICAL"
    with pytest.raises(ConfigurationError, match=r"^RINGTRAIN_LOG_LEVEL='loud' is not a valid log level \(expected "
                                                 r"one of TRACE, DEBUG, INFO, WARNING, ERROR, FATAL, CRITICAL\)$"):
        config(RINGTRAIN_LOG_LEVEL="loud")


def test_a_value_below_a_settings_minimum_is_refused():
    assert config(RINGTRAIN_SEGMENT_BYTES="64").segment_bytes == 64
    with pytest.raises(ConfigurationError, match=r"^RINGTRAIN_SEGMENT_BYTES='63' is too small: the minimum is 64$"):
        config(RINGTRAIN_SEGMENT_BYTES="63")
    with pytest.raises(ConfigurationError, match=r"^RINGTRAIN_SHARED_MEMORY_PIECE_BYTES='2K' is too small: "
                                                 r"the minimum is 4096$"):
        config(RINGTRAIN_SHARED_MEMORY_PIECE_BYTES="2K")


def test_an_init_keyword_wins_over_the_environment():
    c = config({"fusion_threshold": 1024, "cycle_time": 3}, RINGTRAIN_FUSION_THRESHOLD="64M", RINGTRAIN_CYCLE_TIME="x")
    assert (c.fusion_threshold, c.cycle_time) == (1024, 3.0)  # the bad variable is not even read
    assert config({"fusion_threshold": "2M"}).fusion_threshold == 2 << 20
    assert config({"autotune": True}).autotune is True


def test_a_bad_init_keyword_value_is_named_as_a_keyword():
    with pytest.raises(ConfigurationError, match=r"^init\(fusion_threshold=\.\.\.\)=-5 is not a valid fusion threshold"):
        config({"fusion_threshold": -5})


def test_an_unknown_init_keyword_is_refused_with_the_known_ones():
    with pytest.raises(ConfigurationError) as raised:
        config({"fusion_treshold": 1})
    text = str(raised.value)
    assert text.startswith("unknown init() setting(s) ['fusion_treshold']; known settings: ['autotune', ")
    assert "'fusion_threshold'" in text and "'segment_bytes'" in text


def test_the_process_environment_is_read_by_default(monkeypatch):
    monkeypatch.setenv("RINGTRAIN_CACHE_CAPACITY", "7")
    assert Config.from_sources().cache_capacity == 7


# --- Horovod's spellings -------------------------------------------------------------------
def test_horovod_variables_are_honoured_and_said_so():
    c = config(HOROVOD_FUSION_THRESHOLD="1048576", HOROVOD_CYCLE_TIME="5", HOROVOD_CACHE_CAPACITY="0",
               HOROVOD_LOG_LEVEL="fatal")
    assert (c.fusion_threshold, c.cycle_time, c.cache_capacity, c.log_level) == (1 << 20, 5.0, 0, "CRITICAL")
    assert c.notices == ("HOROVOD_FUSION_THRESHOLD=1048576 is honoured as RINGTRAIN_FUSION_THRESHOLD=1048576",
                         "HOROVOD_CYCLE_TIME=5 is honoured as RINGTRAIN_CYCLE_TIME=5.0",
                         "HOROVOD_LOG_LEVEL=fatal is honoured as RINGTRAIN_LOG_LEVEL='CRITICAL'",
                         "HOROVOD_CACHE_CAPACITY=0 is honoured as RINGTRAIN_CACHE_CAPACITY=0")


def test_horovod_stall_and_hierarchical_spellings():
    c = config(HOROVOD_STALL_CHECK_TIME_SECONDS="5", HOROVOD_STALL_SHUTDOWN_TIME_SECONDS="20",
               HOROVOD_HIERARCHICAL_ALLREDUCE="0", HOROVOD_TIMELINE="/tmp/tl.json", HOROVOD_AUTOTUNE="1")
    assert (c.stall_check_time, c.stall_shutdown_time) == (5.0, 20.0)
    assert c.hierarchical_allreduce is False and c.timeline == "/tmp/tl.json" and c.autotune is True


def test_horovod_stall_check_disable_turns_the_check_off_whatever_the_time():
    assert config(HOROVOD_STALL_CHECK_DISABLE="1").stall_check_time == 0.0
    assert config(HOROVOD_STALL_CHECK_DISABLE="1", HOROVOD_STALL_CHECK_TIME_SECONDS="5").stall_check_time == 0.0
    kept = config(HOROVOD_STALL_CHECK_DISABLE="0", HOROVOD_STALL_CHECK_TIME_SECONDS="5")
    assert kept.stall_check_time == 5.0
    assert kept.notices == ("HOROVOD_STALL_CHECK_TIME_SECONDS=5 is honoured as RINGTRAIN_STALL_CHECK_TIME=5.0",)
    both = config(HOROVOD_STALL_CHECK_DISABLE="1", HOROVOD_STALL_CHECK_TIME_SECONDS="5")
    assert both.notices == ("HOROVOD_STALL_CHECK_TIME_SECONDS=5 is overridden by HOROVOD_STALL_CHECK_DISABLE",
                            "HOROVOD_STALL_CHECK_DISABLE=1 is honoured as RINGTRAIN_STALL_CHECK_TIME=0.0")


def test_a_ringtrain_variable_or_keyword_wins_over_horovods_and_says_so():
    c = config(RINGTRAIN_CYCLE_TIME="2", HOROVOD_CYCLE_TIME="5")
    assert c.cycle_time == 2.0
    assert c.notices == ("HOROVOD_CYCLE_TIME is ignored: RINGTRAIN_CYCLE_TIME sets cycle_time",)
    c = config({"cycle_time": 3}, HOROVOD_CYCLE_TIME="bad")  # not read, so not an error
    assert c.cycle_time == 3.0
    assert c.notices == ("HOROVOD_CYCLE_TIME is ignored: init(cycle_time=...) sets cycle_time",)


def test_a_bad_horovod_value_is_refused_under_its_own_name():
    with pytest.raises(ConfigurationError, match=r"^HOROVOD_FUSION_THRESHOLD='64MB' is not a valid fusion threshold"):
        config(HOROVOD_FUSION_THRESHOLD="64MB")
    with pytest.raises(ConfigurationError, match=r"^HOROVOD_STALL_CHECK_DISABLE='maybe' is not a valid stall check "
                                                 r"time \(expected a boolean"):
        config(HOROVOD_STALL_CHECK_DISABLE="maybe")


def test_horovod_settings_without_an_equivalent_are_named_not_silently_ignored():
    c = config(HOROVOD_HIERARCHICAL_ALLGATHER="1", HOROVOD_GPU_OPERATIONS="NCCL")
    assert c.notices == ("HOROVOD_GPU_OPERATIONS has no equivalent in ringtrain and is ignored",
                         "HOROVOD_HIERARCHICAL_ALLGATHER has no equivalent in ringtrain and is ignored")
    assert c == Config()


def test_what_horovodrun_sets_for_each_rank_is_not_a_setting():
    c = config(HOROVOD_RANK="0", HOROVOD_SIZE="2", HOROVOD_LOCAL_RANK="0", HOROVOD_HOSTNAME="h1")
    assert c.notices == () and c == Config()


def test_none_or_empty_turns_a_file_setting_and_the_log_level_off():
    config = Config.from_sources({"timeline": None, "autotune_log": None, "log_level": ""}, {})
    assert (config.timeline, config.autotune_log, config.log_level) == ("", "", "")
    assert Config.from_sources({}, {"RINGTRAIN_LOG_LEVEL": ""}).log_level == ""
