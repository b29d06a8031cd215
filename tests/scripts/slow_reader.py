"""Build one attack set with `attack_sets` under torchrun (2 ranks) while the rank that does not clean up (rank 1)
checks each shard file 2 s late, as a rank descheduled on a busy machine does after the barrier. Rank 0 reads the
shards, writes the set and clears `.parts` within milliseconds, so a rank 1 that is not waited for finds its shard
gone ("attack shard missing or corrupt after it was built"). Prints one JSON line (rank 0): the set's size and
whether `.parts` was cleared.

Usage: slow_reader.py <out dir>
"""

import json
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

import reabsnet.evaluation.paper as paper
from reabsnet import distributed
from reabsnet.data import Splits
from reabsnet.profiles import get_profile

distributed.init(torch.device("cpu"))
out = Path(sys.argv[1])
if distributed.rank() == 1:
    checked = paper.is_valid

    def late(path, key):
        if ".parts" in Path(path).parts:
            time.sleep(2.0)
        return checked(path, key)

    paper.is_valid = late

gen = torch.Generator().manual_seed(0)
images = torch.randint(0, 256, (40, 28, 28), dtype=torch.uint8, generator=gen)
labels = torch.randint(0, 10, (40,), generator=gen)
splits = Splits("mnist", images, labels, images, labels, images, labels, sha256="synthetic", source="synthetic")
torch.manual_seed(0)
model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10)).eval()
spec = paper.ATTACK_SPECS[0]          # FGSM: milliseconds, so the race is the test's only cost
sets = paper.attack_sets(get_profile("smoke"), splits, model, {"sha256": "linear"}, out, {}, specs=[spec], n=20,
                         indices=torch.arange(20 - distributed.rank()))   # rank 1 would pick other images
if distributed.is_main():
    arrays, meta = sets[spec.key]
    print(json.dumps({"n": len(arrays["y"]), "indices": len(meta["indices"]),
                      "parts_left": (out / "attacks" / ".parts").exists()}))
distributed.shutdown()
distributed.leave(0)
