import cProfile, pstats
from imcsim.config import load_config
from imcsim.api import run
lc=load_config("configs/sas_mram_repnet_mobilenetv2_cost.yaml")
cProfile.run("run(lc)", "/tmp/prof2")
pstats.Stats("/tmp/prof2").sort_stats("cumtime").print_stats(25)
