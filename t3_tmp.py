import time
from imcsim.config import load_config
from imcsim.api import run
lc=load_config("configs/sas_mram_repnet_mobilenetv2_cost.yaml")
t=time.time()
r=run(lc, keep_timeline=True)
print("time", time.time()-t)
for k,v in r.report.metrics.items(): print(k, v)
