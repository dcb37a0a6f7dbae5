"""Process sets: collectives over a subset of the ranks, with Horovod's API.

    evens = rt.ProcessSet([0, 2])
    rt.init(process_sets=[evens])          # or later, on every rank: rt.add_process_set(evens)
    rt.allreduce(x, process_set=evens)     # only ranks 0 and 2 call this

Each set has its own communicators, coordinator and response cache, so collectives on disjoint
sets run independently. root_rank and rank() inside a set count within the set."""


class ProcessSet:
    def __init__(self, ranks):
        self.ranks = sorted({int(r) for r in ranks}) if ranks is not None else None
        self.process_set_id = None

    def _register(self, set_id):
        self.process_set_id = set_id
        return self

    def _state(self, caller):
        from . import runtime

        engine = runtime.current(caller).engine
        if self.process_set_id is None:
            raise ValueError(f"{self!r} is not registered: pass it to init(process_sets=[...]) or add_process_set()")
        state = engine.sets.get(self.process_set_id)
        if state is None:
            raise ValueError(f"rank {runtime.rank()} is not a member of {self!r}")
        return state

    def included(self):
        from . import runtime

        return self.ranks is None or runtime.rank() in self.ranks

    def rank(self):
        return self._state("ProcessSet.rank").rank

    def size(self):
        return self._state("ProcessSet.size").size

    def __repr__(self):
        ranks = "all ranks" if self.ranks is None else self.ranks
        return f"ProcessSet(id={self.process_set_id}, ranks={ranks})"


global_process_set = ProcessSet(None)._register(0)
