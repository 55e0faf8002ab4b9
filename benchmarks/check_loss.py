"""python benchmarks/check_loss.py [--device cuda] [--model gpt2_small] [--batch-size 12] [--seq-len 1024]

The sliced head + cross-entropy (gptx.loss) against the plain loss through full logits, on one batch
under the run's autocast: prints the loss and gradient differences, exits 1 when they exceed what
float32 summation order (or, under bf16/fp16 autocast, the autocast dtype's rounding) explains.
"""

from __future__ import annotations

import argparse
import sys

import torch

from gptx.config import DeviceKind, TrainConfig
from gptx.hardware import resolve_device
from gptx.model import build_model
from gptx.precision import resolve_precision
from gptx.scoring import lm_loss
from gptx.tools.bench import model_config


def main(argv: list[str] | None = None) -> int:
    """Compare both losses and their gradients on a fixed random batch; 0 when they agree."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    p.add_argument("--device", choices=[k.value for k in DeviceKind], default="auto")
    p.add_argument("--model", default="gpt2_small")
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--seq-len", type=int, default=None)
    args = p.parse_args(argv)
    train_cfg = TrainConfig(device=DeviceKind(args.device), amp=True, tf32=True)
    device = resolve_device(train_cfg.device)
    precision = resolve_precision(train_cfg, device)
    cfg = model_config(args.model)
    seq_len = args.seq_len or cfg.context_length
    model = build_model(cfg, init_seed=0).to(device).eval()  # no dropout: both passes see the same network
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.vocab_size, (args.batch_size, seq_len + 1), generator=generator)
    x, y = tokens[:, :-1].to(device), tokens[:, 1:].to(device)
    grads, losses = [], []
    for sliced in (True, False):
        model.zero_grad(set_to_none=True)
        with precision.autocast(device):
            loss = model(x, y) if sliced else lm_loss(model(x), y)
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.float().clone() for n, p in model.named_parameters()})
    # float32 summation order moves the 7th digit; an autocast dtype's rounding moves the 3rd.
    tol = 1e-5 if precision.autocast_dtype is None else 2e-2
    sliced, full = grads
    worst = max(((sliced[n] - full[n]).abs().max() / full[n].abs().max().clamp_min(1e-12)).item() for n in full)
    loss_diff = abs(losses[0] - losses[1]) / abs(losses[1])
    print(f"check_loss  model={cfg.name}  device={device}  precision={precision.label}  tokens={x.numel()}")
    print(f"loss sliced {losses[0]:.7f}  full {losses[1]:.7f}  relative diff {loss_diff:.2e}")
    print(f"largest gradient difference relative to the tensor's largest gradient: {worst:.2e} (tolerance {tol:g})")
    ok = loss_diff <= tol and worst <= tol
    print("AGREE" if ok else "DISAGREE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
