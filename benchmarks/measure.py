"""How bench.py measures one thing at a time.

* :class:`Runner`: a candidate's model, AdamW and fixed batch; times training steps
  (synchronising CUDA around each) and counts its parameter and optimizer bytes and the
  bytes autograd saves for backward;
* :class:`Peak`: the FLOP/s that MFU is measured against (a published GPU peak or a
  timed matmul), and :func:`flops_per_step`, the training FLOPs of one step;
* :func:`verify_compile`: ``--verify-compile``, graph breaks and the eager match of tfs's
  compiled training forward;
* small helpers the other modules share: :func:`sync`, :func:`autocast`,
  :func:`first_line`, :func:`plural`.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch._dynamo
from torch import Tensor

from candidates import CANDIDATES, SHAPES, Candidate, LossModule, Shape

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, in TFLOP/s; the
# first name found in torch.cuda.get_device_name() wins.
PUBLISHED_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM, e.g. "NVIDIA H100 80GB HBM3"
    ("H200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:200]


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


class Runner:
    """A model, its optimizer and the fixed batch it trains on."""

    def __init__(
        self,
        candidate: Candidate,
        shape: Shape,
        device: torch.device,
        dtype: torch.dtype | None,
        compiled: bool,
        tokens: Tensor,
    ) -> None:
        torch.manual_seed(0)
        self.model = candidate.build(shape).to(device).train()
        self.loss_module = LossModule(self.model, candidate)
        self.step_fn: Callable[[Tensor], Tensor] = (
            torch.compile(self.loss_module) if compiled else self.loss_module
        )
        # torch's fused AdamW, as tfs train uses (torch's default on CPU loops over the
        # tensors, a cost that grows with their number rather than their size).
        fused = True if device.type in ("cpu", "cuda") else None
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=1e-4, weight_decay=0.1, fused=fused
        )
        self.device = device
        self.dtype = dtype
        self.tokens = tokens

    def step(self) -> Tensor:
        with autocast(self.device, self.dtype):
            loss = self.step_fn(self.tokens)
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def timed(self, steps: int) -> list[float]:
        """Seconds of each of ``steps`` steps (each its own sample: on a shared machine a
        burst of load then spoils one sample, not a whole round)."""
        seconds = []
        for _ in range(steps):
            sync(self.device)
            start = time.perf_counter()
            self.step()
            sync(self.device)
            seconds.append(time.perf_counter() - start)
        return seconds

    def state_bytes(self) -> int:
        total = sum(p.nbytes for p in self.model.parameters())
        for state in self.optimizer.state.values():
            total += sum(v.nbytes for v in state.values() if isinstance(v, Tensor))
        return total

    def saved_bytes(self) -> int:
        """Bytes autograd keeps for backward in one forward and loss (activations), each
        storage counted once, the parameters left out."""
        params = {p.untyped_storage().data_ptr() for p in self.model.parameters()}
        seen: dict[int, int] = {}

        def pack(t: Tensor) -> Tensor:
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr and ptr not in params:
                seen[ptr] = storage.nbytes()
            return t

        with (
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
            autocast(self.device, self.dtype),
        ):
            loss = self.loss_module(self.tokens)
        del loss
        return sum(seen.values())


class Peak:
    """The FLOP/s that MFU is measured against.

    On CUDA, the published dense bf16 peak where the device is in
    :data:`PUBLISHED_BF16_TFLOPS`, else a measured bf16 matmul. On CPU, a square fp32
    matmul with the same threads as the candidates. The matmul is timed once per round
    (the median of 3), in turn with the candidates, so that it sees the same load; the
    peak is the median over the rounds.
    """

    def __init__(self, device: torch.device, size: int) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.size = 8192 if self.cuda else size
        dtype = torch.bfloat16 if self.cuda else torch.float32
        self.a = torch.randn(self.size, self.size, device=device, dtype=dtype)
        self.b = torch.randn(self.size, self.size, device=device, dtype=dtype)
        self.out = self.a @ self.b
        self.samples: list[float] = []
        self.published: tuple[str, float] | None = None
        if self.cuda:
            name = torch.cuda.get_device_name(device)
            self.published = next(
                ((key, tflops) for key, tflops in PUBLISHED_BF16_TFLOPS if key in name), None
            )

    def sample(self) -> None:
        seconds = []
        for _ in range(3):
            sync(self.device)
            start = time.perf_counter()
            torch.mm(self.a, self.b, out=self.out)
            sync(self.device)
            seconds.append(time.perf_counter() - start)
        self.samples.append(2 * self.size**3 / statistics.median(seconds))

    def flops(self) -> float:
        if self.published:
            return self.published[1] * 1e12
        return statistics.median(self.samples) if self.samples else math.nan

    def describe(self) -> str:
        n, samples = self.size, self.samples
        kind = "bf16" if self.cuda else "fp32"
        unit, scale = ("TFLOP/s", 1e12) if self.cuda else ("GFLOP/s", 1e9)
        measured = (
            f"a {kind} matmul {n}x{n} @ {n}x{n} measured {statistics.median(samples) / scale:,.1f}"
            f" {unit} (median over {plural(len(samples), 'round')}, range "
            f"{min(samples) / scale:,.1f}-{max(samples) / scale:,.1f}"
            + ("" if self.cuda else f", {torch.get_num_threads()} threads")
            + ")"
            if samples
            else f"no {kind} matmul measured"
        )
        if self.published:
            key, tflops = self.published
            return f"the published dense bf16 peak of the {key}, {tflops:g} TFLOP/s; {measured}"
        return measured + (" (this GPU has no published peak in the table)" if self.cuda else "")


def flops_per_step(shape: Shape) -> tuple[float, int]:
    """Training FLOPs per step and N, the parameters that take part in matrix products.

    ``6 N`` per token for the weight matrices (2 forward, 4 backward; Kaplan et al. 2020)
    plus ``12 n_layers n_ctx d_model`` for ``q k^T`` and ``A v`` (PaLM, Chowdhery et al.
    2022, appendix B; nanoGPT's estimate_mfu). N counts the blocks' weights and W_U; the
    token and position embeddings are lookups and are left out.
    """
    d, m = shape.d_model, shape.d_mlp
    per_layer = 4 * d * d + 2 * d * m  # W_Q, W_K, W_V, W_O; W_in, W_out
    n = shape.n_layers * per_layer + d * shape.d_vocab
    per_token = 6 * n + 12 * shape.n_layers * shape.n_ctx * d
    return float(per_token * shape.tokens), n


# ---------------------------------------------------------------------------------------
# --verify-compile


def verify_compile(backend: str, log: Callable[[str], None]) -> int:
    """Compile tfs's training forward (forward + loss) with ``fullgraph=True`` on the tiny
    shape for both attention backends, report graph breaks, and compare the loss and the
    gradients with eager. Returns the number of failures."""
    shape = SHAPES["tiny"]
    tokens = torch.randint(0, shape.d_vocab, (shape.batch, shape.n_ctx))
    failures = 0
    for name in ("tfs", "tfs-sdpa"):
        candidate = CANDIDATES[name]
        torch.manual_seed(0)
        module = LossModule(candidate.build(shape).train(), candidate)
        torch._dynamo.reset()
        try:
            explained = torch._dynamo.explain(module)(tokens)
            reasons = [str(getattr(b, "reason", b)) for b in explained.break_reasons]
            log(
                f"{name}: dynamo.explain: {explained.graph_count} graph(s), "
                f"{explained.graph_break_count} graph break(s)"
                + "".join(f"\n    break: {reason}" for reason in reasons)
            )
            failures += explained.graph_break_count > 0
        except Exception as error:
            log(f"{name}: dynamo.explain failed: {first_line(error)}")
            failures += 1
        torch._dynamo.reset()
        try:
            start = time.perf_counter()
            compiled = torch.compile(module, fullgraph=True, backend=backend)
            loss_c = compiled(tokens)
            loss_c.backward()
            grads_c = [p.grad.clone() for p in module.parameters() if p.grad is not None]
            module.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - start
            loss_e = module(tokens)
            loss_e.backward()
            grads_e = [p.grad for p in module.parameters() if p.grad is not None]
            grad_diff = max(
                float((a - b).abs().max()) for a, b in zip(grads_c, grads_e, strict=True)
            )
            loss_diff = float((loss_c - loss_e).detach().abs())
            log(
                f"{name}: torch.compile(fullgraph=True, backend={backend!r}) forward + "
                f"backward in {seconds:.1f} s: |loss - eager| = {loss_diff:.2e}, "
                f"max |grad - eager| = {grad_diff:.2e}"
            )
            failures += not (loss_diff < 1e-4 and grad_diff < 1e-4)
        except Exception as error:
            log(
                f"{name}: torch.compile(fullgraph=True, backend={backend!r}) failed: "
                f"{first_line(error)}"
            )
            failures += 1
    return failures
