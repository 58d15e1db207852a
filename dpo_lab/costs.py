"""Measuring what a method costs: wall time, peak memory, models held, completions sampled.

"DPO is cheaper than RLHF" is a claim about numbers, so we measure them:

* ``wall_s``: seconds of wall-clock time (``time.perf_counter``), and ``cpu_s``, the CPU
  seconds of the process (``time.process_time``, all threads): on shared cores wall time
  grows with the other jobs, CPU time much less, so comparisons are made on both. Work
  inside the block that is not the method's (evaluating checkpoints) is left out with
  :func:`exclude`;
* ``peak_mem_mb``: on a GPU, the peak of ``torch.cuda.max_memory_allocated`` during the
  block (everything the method had on the device, models included); on a CPU, the peak
  *rise* of the process's resident memory (RSS) above its level when the block began,
  read from the kernel's own peak counter: on Linux, writing ``5`` to
  ``/proc/self/clear_refs`` resets the high-water mark ``VmHWM`` of ``/proc/self/status``
  to the current RSS, and the kernel then tracks every page the block touches, however
  briefly (a polling thread misses short peaks, and cannot run while numpy holds the GIL).
  Where that counter cannot be reset (macOS, Windows, a locked-down /proc) the RSS is
  polled every few milliseconds instead, and ``memory_kind`` says so;
* ``models_in_memory`` and ``samples``: counted by the caller, who knows them;
* :func:`model_memory_mb`: the memory that weights, gradients and AdamW's two moments
  need, computed from the parameters: what dominates at scale, whatever the allocator
  does. It is the course's one way of counting that memory (notebooks 03 and 07 use it);
* :func:`peak_memory_mb` after :func:`reset_peak_memory`: the peak of one run (CUDA's
  max allocated, or the process's peak RSS on a CPU), for the benchmark and notebook 07's
  set-ups, which each run in a fresh process.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager

import torch


def rss_mb() -> float:
    """The process's resident memory now, in MiB (psutil if present, else /proc, else the peak so far)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        pass
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # no /proc (macOS without psutil): the lifetime peak is all we can read
        try:
            import resource
        except ImportError:  # Windows without psutil (jupyter installs psutil): memory goes unmeasured
            return 0.0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux ``VmHWM``) to the current RSS; False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return peak_rss_mb() is not None
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    """The kernel's peak RSS of this process since start or the last :func:`reset_peak_rss`, in MiB
    (``VmHWM``); ``None`` without /proc (macOS, Windows)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


# peaks of the measure() blocks now open, so that a nested block's reset of the counter
# does not erase the peak an enclosing block has reached so far
_open_blocks: list[dict] = []


def _fold_peak_into_open_blocks() -> None:
    peak = peak_rss_mb()
    if peak is not None:
        for block in _open_blocks:
            block["peak"] = max(block["peak"], peak)


class _RssPoller(threading.Thread):
    """Polls the RSS in the background and keeps its maximum."""

    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval, self.peak = interval, rss_mb()
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, rss_mb())

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, rss_mb())
        return self.peak


@contextmanager
def measure(method: str, models_in_memory: int | None = None, samples: int = 0, device=None,
            interval: float = 0.005):
    """Measure the block's wall time and peak memory; yields a dict filled in on exit.

    The dict holds ``method``, ``models_in_memory``, ``samples`` (update it inside the
    block if you count as you go), and on exit ``wall_s``, ``cpu_s``, ``peak_mem_mb`` and
    ``memory_kind`` (``"cuda max allocated"`` or ``"cpu rss rise"``).
    """
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    record = {"method": method, "models_in_memory": models_in_memory, "samples": samples}
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        _fold_peak_into_open_blocks()
        block = {"peak": 0.0}
        kernel = reset_peak_rss()
        if kernel:
            start_rss = rss_mb()
            block["peak"] = start_rss
            _open_blocks.append(block)
        else:
            poller = _RssPoller(interval)
            start_rss = poller.peak
            poller.start()
    start, start_cpu = time.perf_counter(), time.process_time()
    try:
        yield record
    finally:
        if cuda:
            torch.cuda.synchronize(device)
        # time spent in exclude() blocks (evaluations run during training) is not the method's cost
        record["wall_s"] = time.perf_counter() - start - record.get("excluded_wall_s", 0.0)
        record["cpu_s"] = time.process_time() - start_cpu - record.get("excluded_cpu_s", 0.0)
        if cuda:
            record["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            record["memory_kind"] = "cuda max allocated"
        elif kernel:
            _fold_peak_into_open_blocks()
            _open_blocks.remove(block)
            record["peak_mem_mb"] = max(0.0, block["peak"] - start_rss)
            record["memory_kind"] = "cpu rss rise"
        else:
            record["peak_mem_mb"] = max(0.0, poller.stop() - start_rss)
            record["memory_kind"] = "cpu rss rise (polled: may miss short peaks)"


@contextmanager
def exclude(record: dict):
    """Leave this block's time out of ``record``, the dict an enclosing :func:`measure` yielded.

    For work done inside a measured block that is not the method's cost, such as
    evaluating checkpoints during training. The time left out is kept in the record as
    ``excluded_wall_s`` and ``excluded_cpu_s``. (Memory cannot be split this way: the peak
    includes the excluded work.)
    """
    start, start_cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        record["excluded_wall_s"] = record.get("excluded_wall_s", 0.0) + time.perf_counter() - start
        record["excluded_cpu_s"] = record.get("excluded_cpu_s", 0.0) + time.process_time() - start_cpu


def peak_memory_mb(device) -> float:
    """Peak memory since the last :func:`reset_peak_memory`, MiB: GPU max allocated on CUDA, else the
    process's peak resident set (the kernel's ``VmHWM`` on Linux).

    Without /proc (macOS) the lifetime peak from ``getrusage`` is returned, and without that
    (Windows) the current RSS: each run then happens in a fresh process, so it is its own.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = peak_rss_mb()
    if peak is not None:
        return peak
    try:
        import resource  # not on Windows
    except ImportError:
        return rss_mb()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, kB elsewhere


def reset_peak_memory(device) -> float:
    """Start a new peak: CUDA's peak statistics, or the kernel's peak-RSS counter on a CPU.
    Returns the memory in use now (the level a rise is measured from), MiB."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    reset_peak_rss()
    return rss_mb()


def model_memory_mb(held=(), trained=(), optimizer_states: int = 2) -> float:
    """MiB that the models of a set-up keep alive for training, counted from their parameters.

    The course counts this memory this one way (notebooks 03 and 07, and
    :func:`dpo_lab.tasks.sentiment.run_setup`). It counts:

    * weights: every parameter of every model in ``held`` (kept, not trained: a reference, a
      reward model) and in ``trained``, each tensor once: a tensor two models share (LoRA's
      frozen base weights, tied embeddings, a model passed twice) is one tensor in memory;
    * gradients: one for each parameter of a ``trained`` model that requires a gradient (a
      frozen parameter, such as LoRA's base weights under its adapters, has none);
    * optimiser state: ``optimizer_states`` numbers for each of those parameters (2 for AdamW,
      its first and second moments; 0 for plain SGD);
    * bytes per number: the parameter's own element size (4 for float32, 2 for bf16/fp16),
      because PyTorch keeps a gradient and AdamW's moments in the parameter's dtype.

    So a float32 parameter trained with AdamW costs 16 bytes and a kept one 4. Activations
    are not counted (they depend on batch size and sequence length), nor the allocator's
    overhead. Models on the ``meta`` device count too: sizes without allocating them.
    """
    seen, total = set(), 0
    for models, training in ((trained, True), (held, False)):  # trained first: a model in both is trained
        for model in models:
            for p in model.parameters():
                if id(p) in seen:  # the same tensor reached through a second model
                    continue
                seen.add(id(p))
                numbers = 1 + (1 + optimizer_states if training and p.requires_grad else 0)
                total += numbers * p.numel() * p.element_size()
    return total / 2**20
