"""The engine: what happens to a collective after ringtrain.collectives has checked its arguments.

requests.py (a Request, its name and Handle) -> engine.py (a background thread of rounds per
process set, and the steady path a synchronous call takes in its own thread) -> coordinator.py
(the first rank of a set agrees on what is ready, finds mismatches and stalls; its messages are
control_messages.py, its memory response_cache.py) -> executor.py (fusion, then the C core:
csrc/allreduce.c and the algorithm files, all sending through csrc/p2p.c)."""
