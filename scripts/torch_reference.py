"""The same CIFAR ResNet trained in a plain PyTorch loop: the reference rate for
``scripts/bench_train.py --torch PY``.

It needs only torch (no Keras, no kerasgen), so it runs under any Python that has torch:

    /path/to/torch-python scripts/torch_reference.py --model resnet20 --batch-size 16 \
        --seconds 12

The network is kerasgen's ``resnet<6n+2>`` (bearpaw's pytorch-classification CIFAR ResNet:
a 3x3 stem of 16 filters, three stages of n basic blocks of 16/32/64 filters, a 1x1 conv +
BN projection shortcut where the shape changes, global average pooling, a linear head),
trained with plain SGD (no momentum, no weight decay) and cross-entropy, in training mode
(batch norm updating its statistics), on random images held in memory as pre-made batches:
no input pipeline, the fastest a PyTorch loop trains this network, so a kerasgen figure at
or above it is a fair claim. After ``--warmup-steps`` steps, the loop runs until
``--seconds`` have passed; the rate is images over the wall time of the timed steps.
Prints one JSON line: {"model", "batch_size", "threads", "steps", "seconds", "rate",
"torch", "parameters"}.
"""

from __future__ import annotations

import argparse
import json
import re
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet20", help="resnet<6n+2>")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--input-shape", default="32,32,3", help="height,width,channels")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--warmup-steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's)")
    return p.parse_args(argv)


def build(model: str, classes: int, channels: int):
    import torch
    from torch import nn

    match = re.fullmatch(r"resnet(\d+)", model)
    if not match or int(match.group(1)) < 8 or (int(match.group(1)) - 2) % 6:
        raise SystemExit(f"torch_reference.py: --model must be resnet<6n+2>, not {model!r}")
    blocks = (int(match.group(1)) - 2) // 6

    class Block(nn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.shortcut = nn.Sequential()
            if stride != 1 or c_in != c_out:
                self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                              nn.BatchNorm2d(c_out))

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + self.shortcut(x))

    layers = [nn.Conv2d(channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    c_in = 16
    for stage, c_out in enumerate((16, 32, 64)):
        for block in range(blocks):
            layers.append(Block(c_in, c_out, 2 if stage > 0 and block == 0 else 1))
            c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes)]
    return nn.Sequential(*layers)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, w, c = (int(s) for s in args.input_shape.split(","))
    net = build(args.model, args.classes, c)
    net.train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    batches = [(torch.randn(args.batch_size, c, h, w),
                torch.randint(0, args.classes, (args.batch_size,))) for _ in range(16)]

    def step(i):
        x, y = batches[i % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
        return loss

    for i in range(args.warmup_steps):
        step(i).item()
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < args.seconds:
        step(steps).item()  # .item(): the step has finished, as Keras's logs force
        steps += 1
    wall = time.perf_counter() - started
    print(json.dumps({"model": args.model, "batch_size": args.batch_size,
                      "threads": torch.get_num_threads(), "steps": steps, "seconds": wall,
                      "rate": steps * args.batch_size / wall, "torch": torch.__version__,
                      "parameters": sum(p.numel() for p in net.parameters())}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
