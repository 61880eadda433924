import time, torch, torch.nn.functional as F
from imcsim.workloads.backbones import build_backbone
from imcsim.workloads.models import RepNet
from imcsim.workloads.continual import _set_trainable, _train_mode
torch.manual_seed(0)
b=build_backbone("mobilenet_v2",3)
m=RepNet(b,[0,3,6,9,12,15],32,224); m.add_head("t",5)
_set_trainable(m,"repnet"); _train_mode(m,"repnet")
x=torch.randn(8,3,224,224); y=torch.randint(0,5,(8,))
for i in range(4):
    t=time.perf_counter()
    loss=F.cross_entropy(m(x,"t"),y); loss.backward()
    print(time.perf_counter()-t)
_set_trainable(m,"full"); m.train()
for i in range(3):
    t=time.perf_counter()
    loss=F.cross_entropy(m(x,"t"),y); loss.backward()
    print("full", time.perf_counter()-t)
