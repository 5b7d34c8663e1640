"""nanomamba_hw: NanoMamba keyword spotting from float reference to a verified FPGA accelerator.

Layout (see docs/architecture.md): ``config`` (variants), ``reference`` (float PyTorch model),
``checkpoint`` (our format + published imports), ``audio`` (WAV input), ``data`` (datasets,
noise), ``fixed`` (bit-accurate integer model), ``hw`` (Amaranth components), and the
``python -m`` entry points ``predict``, ``train``, ``evaluate``, ``build``.
"""

__version__ = "0.1.0"
