"""Data for training and evaluation: the Speech Commands loader, the espeak-ng synthetic corpus
and procedural noise with SNR mixing (see docs/data.md).

- :class:`SpeechCommands`: one split of a Speech Commands-layout directory, 12 classes.
- :func:`build_corpus`: the offline synthetic corpus in that layout (cached, deterministic).
- :func:`make_noise`, :func:`mix_at_snr`, :data:`NOISE_TYPES`: noise augmentation.
"""

from .noise import NOISE_TYPES, make_noise, mix_at_snr, speech_source_from_corpus
from .speech_commands import DatasetError, SpeechCommands

__all__ = [
    "NOISE_TYPES", "DatasetError", "SpeechCommands", "build_corpus", "make_noise",
    "mix_at_snr", "speech_source_from_corpus",
]


def __getattr__(name: str):
    # Imported on first use, so ``python -m nanomamba_hw.data.synthetic`` does not find its
    # own module already loaded by the package.
    if name == "build_corpus":
        from .synthetic import build_corpus

        return build_corpus
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
