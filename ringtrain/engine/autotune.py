"""Online tuning of the fusion threshold, the cycle time and the small-message threshold.

Coordinate search, one setting at a time: each candidate value runs for a warm-up and then a
measured window of rounds that did work; the measure is bytes reduced per second of wall time
(so it includes the compute between steps, as a user would see it). The best value is kept
and the next setting is tuned. The number of rounds is bounded by the candidate lists, after
which the settings stay fixed. Rank 0 decides; its choices reach every rank in the
negotiation response, so all ranks switch at the same round. Every trial is a row in the CSV."""
import csv
import logging

log = logging.getLogger("ringtrain")

CANDIDATES = {
    "fusion_threshold": [1 << 20, 4 << 20, 16 << 20, 64 << 20, 128 << 20],
    "cycle_time": [0.5, 1.0, 2.5, 5.0],
    "small_allreduce_threshold": [2 << 10, 8 << 10, 32 << 10, 64 << 10],
}
WARMUP_ROUNDS = 3
MEASURED_ROUNDS = 10


class Autotuner:
    def __init__(self, tuning, log_path):
        self.tuning = tuning
        self.plan = [(field, value) for field, values in CANDIDATES.items() for value in values]
        self.best = {}
        self.trial = -1
        self.rounds = 0
        self.window_start = None
        self.news = {}
        self.settled = False
        self.results = []
        self._csv = open(log_path, "w", newline="") if log_path else None
        self._writer = csv.writer(self._csv) if self._csv else None
        if self._writer:
            self._writer.writerow(["trial", "setting", "value", "bytes_per_second", "fusion_threshold",
                                   "cycle_time", "small_allreduce_threshold"])
        self._next_trial()

    def _next_trial(self):
        self.trial += 1
        self.rounds, self.window_start = 0, None
        if self.trial < len(self.plan):
            field, value = self.plan[self.trial]
            self.news = {**self.best, field: value}
        else:
            self.settled = True
            self.news = dict(self.best)
            log.info("ringtrain autotune settled after %d trials: %s", len(self.plan), self.best)
            if self._csv:
                self._csv.close()
                self._csv = None

    def has_news(self):
        return bool(self.news)

    def take_news(self):
        news, self.news = self.news, {}
        return news

    def observe(self, total_bytes, now):
        if self.settled or self.news:
            return  # the trial's settings have not been published yet
        self.rounds += 1
        if self.rounds == WARMUP_ROUNDS:
            self.window_start = (total_bytes, now)
        elif self.rounds == WARMUP_ROUNDS + MEASURED_ROUNDS:
            start_bytes, start_time = self.window_start
            rate = (total_bytes - start_bytes) / max(now - start_time, 1e-9)
            field, value = self.plan[self.trial]
            self.results.append((field, value, rate))
            if self._writer:
                self._writer.writerow([self.trial, field, value, f"{rate:.0f}", self.tuning.fusion_threshold,
                                       self.tuning.cycle_time, self.tuning.small_allreduce_threshold])
                self._csv.flush()
            last_of_field = self.trial + 1 == len(self.plan) or self.plan[self.trial + 1][0] != field
            if last_of_field:
                tried = [(r, v) for f, v, r in self.results if f == field]
                self.best[field] = max(tried)[1]
            self._next_trial()
