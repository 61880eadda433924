import time
from imcsim.config import load_config
from imcsim.api import run, build_hardware
from imcsim.workloads.continual import run_cost_only
from imcsim.sim.timeline import schedule_run
from imcsim.sim import tally_ops
lc=load_config("configs/sas_mram_repnet_mobilenetv2_cost.yaml")
run(lc)
for i in range(2):
    hw=build_hardware(lc)
    t=time.perf_counter(); res=run_cost_only(lc.config.workload, hw.macro, 0); t1=time.perf_counter()
    tl=schedule_run(res.ops, res.graphs, hw.macro); t2=time.perf_counter()
    ta=tally_ops(res.ops); t3=time.perf_counter()
    print("ops", t1-t, "sched", t2-t1, "tally", t3-t2, len(res.ops), tl.tasks_scheduled, tl.scheduler.events)
import cProfile, pstats
hw=build_hardware(lc)
cProfile.run("res=run_cost_only(lc.config.workload, hw.macro, 0); tl=schedule_run(res.ops, res.graphs, hw.macro)", "/tmp/prof3")
pstats.Stats("/tmp/prof3").sort_stats("tottime").print_stats(15)
