"""All settings, parsed once at init() into one typed object.

Each setting can be given as an init() keyword argument or as its RINGTRAIN_* environment
variable; the keyword wins. Horovod's HOROVOD_* variables for the same settings are honoured
too (below the RINGTRAIN_* ones), each with a one-line notice naming the ringtrain equivalent;
HOROVOD_* variables that ringtrain has no equivalent for are named in a notice, never silently
ignored. An invalid value is a ConfigurationError at init(), naming the variable and the value,
never a surprise later."""
import dataclasses
import os

from .errors import ConfigurationError


def _parse_bytes(text):
    """An integer number of bytes, optionally with a K/M/G suffix (powers of 1024)."""
    text = str(text).strip()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    number = text[:-1] if scale != 1 else text
    value = int(number) * scale
    if value < 0:
        raise ValueError("negative")
    return value


def _parse_non_negative_float(text):
    value = float(str(text).strip())
    if not value >= 0 or value == float("inf"):
        raise ValueError("not a finite non-negative number")
    return value


def _parse_bool(text):
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("not a boolean")


def _parse_path(text):
    """A file to write, or "" (None too) for none."""
    return "" if text is None else str(text)


def _parse_count(text):
    value = int(str(text).strip())
    if value < 0:
        raise ValueError("negative")
    return value


# Horovod's log levels, as the logging module's names
LOG_LEVELS = {"TRACE": "DEBUG", "DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARNING", "ERROR": "ERROR",
              "FATAL": "CRITICAL", "CRITICAL": "CRITICAL"}


def _parse_log_level(text):
    if text is None or not str(text).strip():
        return ""  # the default: ringtrain's own warnings only
    level = LOG_LEVELS.get(str(text).strip().upper())
    if level is None:
        raise ValueError(text)
    return level


def _stall_check_disabled(text):
    """HOROVOD_STALL_CHECK_DISABLE=1 is a stall check time of 0."""
    return 0.0 if _parse_bool(text) else None


# Horovod's variables for ringtrain's settings: (field, how to read it), in Horovod's units.
HOROVOD_ENV = {
    "HOROVOD_FUSION_THRESHOLD": ("fusion_threshold", _parse_bytes),
    "HOROVOD_CYCLE_TIME": ("cycle_time", _parse_non_negative_float),
    "HOROVOD_CACHE_CAPACITY": ("cache_capacity", _parse_count),
    "HOROVOD_STALL_CHECK_TIME_SECONDS": ("stall_check_time", _parse_non_negative_float),
    "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": ("stall_shutdown_time", _parse_non_negative_float),
    "HOROVOD_STALL_CHECK_DISABLE": ("stall_check_time", _stall_check_disabled),
    "HOROVOD_TIMELINE": ("timeline", _parse_path),
    "HOROVOD_TIMELINE_MARK_CYCLES": ("timeline_mark_cycles", _parse_bool),
    "HOROVOD_LOG_LEVEL": ("log_level", _parse_log_level),
    "HOROVOD_AUTOTUNE": ("autotune", _parse_bool),
    "HOROVOD_AUTOTUNE_LOG": ("autotune_log", _parse_path),
    "HOROVOD_HIERARCHICAL_ALLREDUCE": ("hierarchical_allreduce", _parse_bool),
}
# Set by horovodrun or the Horovod runtime itself, not settings: no notice for these.
HOROVOD_LAUNCHER_ENV = frozenset({"HOROVOD_HOSTNAME", "HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK",
                                  "HOROVOD_LOCAL_SIZE", "HOROVOD_CROSS_RANK", "HOROVOD_CROSS_SIZE"})


@dataclasses.dataclass(frozen=True)
class Config:
    # Allreduces of at most this many bytes use recursive doubling, larger ones the ring.
    # Measured with bench/allreduce.py --sweep: the crossover is between 4 and 16 KB on 3 ranks,
    # above 16 KB on 2 (bench/RESULTS.md).
    small_allreduce_threshold: int = 8 * 1024
    # Pipeline segment of the ring algorithms and the broadcast tree (1 MB beat 64 KB and
    # 256 KB on 2 and 3 ranks from 1 MB to 64 MB, bench/RESULTS.md).
    segment_bytes: int = 1024 * 1024
    # Tensor Fusion: allreduces that become ready in one cycle are packed into buffers of up to
    # this many bytes (0 disables fusion). Horovod's default.
    fusion_threshold: int = 64 * 1024 * 1024
    # Milliseconds the background thread waits between negotiation rounds; synchronous calls
    # do not wait for it (they drive a round themselves).
    cycle_time: float = 1.0
    # Seconds before the stall inspector warns about a tensor some ranks submitted and others
    # did not; and (if > 0) before such a stall becomes an error on every rank.
    stall_check_time: float = 60.0
    stall_shutdown_time: float = 0.0
    # Seconds a wait may see no message complete before ringtrain checks whether the ranks it
    # waits on are alive (heartbeats); if one has stopped, every other rank gets a
    # ProgressTimeoutError naming it. A live but slow peer is waited for. 0 waits for ever.
    # The longest quiet stretch of a 64 MB allreduce over a 1 Gbit/s link is far below this
    # (bench/RESULTS.md, "Progress deadline").
    progress_timeout: float = 30.0
    # Chrome trace JSON written by rank 0 ("" = off); with mark cycles, a CYCLE_START mark at
    # every round that ran collectives (Horovod's --timeline-mark-cycles).
    timeline: str = ""
    timeline_mark_cycles: bool = False
    # The "ringtrain" logger's level on every rank (Horovod's --log-level; TRACE is DEBUG here);
    # "" leaves the logger as the program configured it.
    log_level: str = ""
    # Tune fusion_threshold, cycle_time and small_allreduce_threshold online.
    autotune: bool = False
    autotune_log: str = ""
    # Response cache entries per process set (Horovod's default); 0 disables the cache, so every
    # round negotiates through the coordinator.
    cache_capacity: int = 4096
    # Inside a host, allreduces above small_allreduce_threshold (and of at least
    # shared_memory_threshold bytes) go through a segment the host's ranks share
    # (csrc/shm_allreduce.c), in pieces of shared_memory_piece_bytes per rank (the segment holds
    # two per rank). Across hosts with the same number of ranks on each, those of at least
    # hierarchical_threshold bytes reduce inside each host through it and cross hosts once per
    # local rank (csrc/hierarchical_allreduce.c; Horovod's HOROVOD_HIERARCHICAL_ALLREDUCE).
    # Small messages stay with recursive doubling, which a negotiation round carries them with.
    # Measured with bench/allreduce.py --sweep [--pieces]: bench/RESULTS.md, "Shared memory".
    shared_memory: bool = True
    shared_memory_threshold: int = 0
    shared_memory_piece_bytes: int = 256 * 1024
    hierarchical_allreduce: bool = True
    hierarchical_threshold: int = 0
    # Across hosts, local rank 0 alone carries the whole buffer to the other hosts, instead of
    # every local rank carrying its 1/n at once (bench/RESULTS.md, "Shared memory").
    hierarchical_one_leader: bool = False
    # What init() tells the user about the settings' sources (HOROVOD_* variables); not a setting.
    notices: tuple = dataclasses.field(default=(), compare=False)

    ENV = {
        "small_allreduce_threshold": ("RINGTRAIN_SMALL_ALLREDUCE_THRESHOLD", _parse_bytes),
        "segment_bytes": ("RINGTRAIN_SEGMENT_BYTES", _parse_bytes),
        "fusion_threshold": ("RINGTRAIN_FUSION_THRESHOLD", _parse_bytes),
        "cycle_time": ("RINGTRAIN_CYCLE_TIME", _parse_non_negative_float),
        "stall_check_time": ("RINGTRAIN_STALL_CHECK_TIME", _parse_non_negative_float),
        "stall_shutdown_time": ("RINGTRAIN_STALL_SHUTDOWN_TIME", _parse_non_negative_float),
        "progress_timeout": ("RINGTRAIN_PROGRESS_TIMEOUT", _parse_non_negative_float),
        "timeline": ("RINGTRAIN_TIMELINE", _parse_path),
        "timeline_mark_cycles": ("RINGTRAIN_TIMELINE_MARK_CYCLES", _parse_bool),
        "log_level": ("RINGTRAIN_LOG_LEVEL", _parse_log_level),
        "autotune": ("RINGTRAIN_AUTOTUNE", _parse_bool),
        "autotune_log": ("RINGTRAIN_AUTOTUNE_LOG", _parse_path),
        "cache_capacity": ("RINGTRAIN_CACHE_CAPACITY", _parse_count),
        "shared_memory": ("RINGTRAIN_SHARED_MEMORY", _parse_bool),
        "shared_memory_threshold": ("RINGTRAIN_SHARED_MEMORY_THRESHOLD", _parse_bytes),
        "shared_memory_piece_bytes": ("RINGTRAIN_SHARED_MEMORY_PIECE_BYTES", _parse_bytes),
        "hierarchical_allreduce": ("RINGTRAIN_HIERARCHICAL_ALLREDUCE", _parse_bool),
        "hierarchical_threshold": ("RINGTRAIN_HIERARCHICAL_THRESHOLD", _parse_bytes),
        "hierarchical_one_leader": ("RINGTRAIN_HIERARCHICAL_ONE_LEADER", _parse_bool),
    }
    MINIMUM = {"segment_bytes": 64, "shared_memory_piece_bytes": 4096}
    EXPECTED = {
        _parse_bytes: "a non-negative number of bytes, e.g. 65536 or 64K",
        _parse_non_negative_float: "a non-negative number",
        _parse_bool: "a boolean (1/0, true/false)",
        _parse_path: "a path",
        _parse_count: "a non-negative integer",
        _stall_check_disabled: "a boolean (1/0, true/false)",
        _parse_log_level: "one of " + ", ".join(LOG_LEVELS),
    }

    @classmethod
    def from_sources(cls, overrides=None, environ=None):
        environ = os.environ if environ is None else environ
        overrides = dict(overrides or {})
        unknown = set(overrides) - set(cls.ENV)
        if unknown:
            raise ConfigurationError(
                f"unknown init() setting(s) {sorted(unknown)}; known settings: {sorted(cls.ENV)}"
            )
        values, notices = {}, []
        horovod = {field: [] for field in cls.ENV}
        for variable, (field, _) in HOROVOD_ENV.items():  # in this order: HOROVOD_STALL_CHECK_DISABLE wins
            if variable in environ:
                horovod[field].append(variable)
        for variable in sorted(v for v in environ if v.startswith("HOROVOD_")):
            if variable not in HOROVOD_ENV and variable not in HOROVOD_LAUNCHER_ENV:
                notices.append(f"{variable} has no equivalent in ringtrain and is ignored")
        for field, (variable, parse) in cls.ENV.items():
            if field in overrides:
                sources = [(f"init({field}=...)", overrides[field], parse)]
            elif variable in environ:
                sources = [(variable, environ[variable], parse)]
            else:
                sources = [(name, environ[name], HOROVOD_ENV[name][1]) for name in horovod[field]]
            applied = []
            for source, raw, read in sources:
                try:
                    value = read(raw)
                except (TypeError, ValueError):
                    raise ConfigurationError(f"{source}={raw!r} is not a valid {field.replace('_', ' ')} "
                                             f"(expected {cls.EXPECTED[read]})") from None
                if value is None:  # e.g. HOROVOD_STALL_CHECK_DISABLE=0: no setting
                    continue
                if value < cls.MINIMUM.get(field, value):
                    raise ConfigurationError(f"{source}={raw!r} is too small: the minimum is {cls.MINIMUM[field]}")
                values[field] = value
                applied.append((source, raw))
            if applied and applied[-1][0].startswith("HOROVOD_"):  # the last one applied wins
                *overridden, (source, raw) = applied
                notices += [f"{name}={text} is overridden by {source}" for name, text in overridden]
                notices.append(f"{source}={raw} is honoured as {variable}={values[field]!r}")
            for name in horovod[field] if sources and not sources[0][0].startswith("HOROVOD_") else ():
                notices.append(f"{name} is ignored: {sources[0][0]} sets {field}")
        return cls(**values, notices=tuple(notices))
