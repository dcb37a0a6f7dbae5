"""The planner: one cost model of ringtrain's communication (costs.py), fitted on a real job
(measure.py), turned into advice (advise.py: rt.plan and `ringtrain plan`) and checked against
measured steps (validate.py)."""
