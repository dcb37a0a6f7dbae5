"""All settings, parsed once at init() into one typed object.

Each setting can be given as an init() keyword argument or as its RINGTRAIN_* environment
variable; the keyword wins. An invalid value is a ConfigurationError at init(), naming the
variable and the value, never a surprise later."""
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


@dataclasses.dataclass(frozen=True)
class Config:
    # Allreduces of at most this many bytes use recursive doubling, larger ones the ring.
    # Measured with bench/allreduce.py --sweep: the crossover is between 4 and 16 KB on 3 ranks,
    # above 16 KB on 2 (bench/RESULTS.md).
    small_allreduce_threshold: int = 8 * 1024
    # Pipeline segment of the ring algorithms and the broadcast tree (1 MB beat 64 KB and
    # 256 KB on 2 and 3 ranks from 1 MB to 64 MB, bench/RESULTS.md).
    segment_bytes: int = 1024 * 1024

    ENV = {
        "small_allreduce_threshold": ("RINGTRAIN_SMALL_ALLREDUCE_THRESHOLD", _parse_bytes),
        "segment_bytes": ("RINGTRAIN_SEGMENT_BYTES", _parse_bytes),
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
        values = {}
        for field, (variable, parse) in cls.ENV.items():
            if field in overrides:
                source, raw = f"init({field}=...)", overrides[field]
            elif variable in environ:
                source, raw = variable, environ[variable]
            else:
                continue
            try:
                values[field] = parse(raw)
            except (TypeError, ValueError):
                raise ConfigurationError(
                    f"{source}={raw!r} is not a valid {field.replace('_', ' ')} "
                    "(expected a non-negative number of bytes, e.g. 65536 or 64K)"
                ) from None
        config = cls(**values)
        if config.segment_bytes < 64:
            raise ConfigurationError(f"segment_bytes={config.segment_bytes} is too small (minimum 64)")
        return config
