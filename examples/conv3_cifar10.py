"""Conv3 on CIFAR-10 under several rules at a CPU-sized budget (docs/cnn.md).

usage: DFLEARN_DATA_DIR=... python examples/conv3_cifar10.py EPOCHS TEST_EVERY RULE [RULE ...]
Trains on the whole training split; tests on every TEST_EVERY-th test image
(the shared copy's test set is grouped by class, so a stride keeps it balanced).
One thread; on a shared CPU the wall seconds include waiting, the CPU seconds do not.
"""
import sys
import time

import torch

from dflearn.data import Batches, load_dataset
from dflearn.feedback.step import train_step
from dflearn.models import build_model
from dflearn.rules import make_rule

torch.set_num_threads(1)
epochs, every, rules = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
data = load_dataset("cifar10")
data.x_test, data.y_test = data.x_test[::every], data.y_test[::every]
for name in rules:
    torch.manual_seed(0)
    model = build_model("conv3", data.input_shape, data.num_classes)
    rule = make_rule(name, model, torch.zeros(1, *data.input_shape))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    fb_opt = torch.optim.Adam(rule.parameters(), lr=1e-4) if rule.learns_feedback else None
    batches = Batches(data, "train", 64, shuffle=True, generator=torch.Generator().manual_seed(0))
    for epoch in range(1, epochs + 1):
        model.train()
        start, cpu, total = time.perf_counter(), time.process_time(), 0.0
        for x, y in batches:
            total += train_step(model, rule, x, y, opt, fb_opt)[0].item()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        model.eval()
        with torch.no_grad():
            correct = sum((model(x).argmax(1) == y).sum().item() for x, y in Batches(data, "test", 500))
        print(f"{name} epoch {epoch}: train loss {total / len(batches):.3f}, "
              f"test acc {correct / len(data.y_test):.4f} ({len(data.y_test)} images), {seconds:.0f} s/epoch wall, {cpu:.0f} s CPU", flush=True)
