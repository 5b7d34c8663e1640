"""Model configuration: every choice that distinguishes one NanoMamba variant from another.

A :class:`ModelConfig` fully determines the float model's architecture and its non-learned
constants (SSM calibration values, front-end kind, SNR estimator kind, DualPCEN routing).
Together with a state dict it is the whole model; it is stored in every checkpoint we write.
See ``docs/architecture.md`` ("Adding a variant") and ``model-math.md`` §0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# Class order of the published checkpoints (model-math.md §5).
CLASS_NAMES: tuple[str, ...] = (
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "silence", "unknown",
)

SAMPLE_RATE = 16000
CLIP_SAMPLES = 16000

FRONTENDS = ("logmel", "dualpcen")
SNR_MODES = ("static", "ema")
ROUTINGS = ("sf", "sf+tilt")


@dataclass(frozen=True)
class SSMConstants:
    """The five SA-SSM calibration constants (model-math.md §4.5, §7).

    They are buffers, not parameters: the published runtime calibration overwrites them, and the
    hardware exposes them as registers. Δ floor and ε are interpolated by the frame's mean SNR:
    ``floor = delta_floor_min + (delta_floor_max - delta_floor_min) * snr_mean`` and
    ``eps = eps_max - (eps_max - eps_min) * snr_mean``.
    """

    delta_floor_min: float = 0.05
    delta_floor_max: float = 0.15
    eps_min: float = 0.08
    eps_max: float = 0.20
    bgate_floor: float = 0.3

    def as_tuple(self) -> tuple[float, float, float, float, float]:
        return (self.delta_floor_min, self.delta_floor_max, self.eps_min, self.eps_max,
                self.bgate_floor)


# Published calibration profiles (model-math.md §7), for users who want to reproduce them.
CALIBRATION_PROFILES: dict[str, SSMConstants] = {
    "default": SSMConstants(0.05, 0.15, 0.08, 0.20, 0.3),
    "clean": SSMConstants(0.15, 0.15, 0.08, 0.08, 0.0),
    "light": SSMConstants(0.08, 0.15, 0.08, 0.15, 0.2),
    "moderate": SSMConstants(0.05, 0.15, 0.10, 0.20, 0.3),
    "extreme": SSMConstants(0.02, 0.15, 0.15, 0.30, 0.5),
}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and constants of one NanoMamba variant.

    ``d_inner`` is ``int(expand * d_model)`` as in the published code (21 → 31).
    """

    name: str = "NanoMamba-Tiny-DualPCEN"
    frontend: str = "dualpcen"        # "logmel": ln(mel + 1e-8); "dualpcen": floor + DualPCEN v1
    snr_mode: str = "ema"             # "static": mean of first 5 frames; "ema": running EMA
    routing: str = "sf"               # DualPCEN routing: "sf" or "sf+tilt" (ignored for logmel)
    d_model: int = 16
    d_state: int = 4
    expand: float = 1.5
    d_conv: int = 3
    n_layers: int = 2
    n_mels: int = 40
    n_fft: int = 512
    hop: int = 160
    sample_rate: int = SAMPLE_RATE
    n_classes: int = 12
    class_names: tuple[str, ...] = CLASS_NAMES
    ssm: SSMConstants = field(default_factory=SSMConstants)

    def __post_init__(self) -> None:
        if self.frontend not in FRONTENDS:
            raise ValueError(f"frontend must be one of {FRONTENDS}, got {self.frontend!r}")
        if self.snr_mode not in SNR_MODES:
            raise ValueError(f"snr_mode must be one of {SNR_MODES}, got {self.snr_mode!r}")
        if self.routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {self.routing!r}")
        if len(self.class_names) != self.n_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.n_classes} classes")
        for fld in ("d_model", "d_state", "d_conv", "n_layers", "n_mels", "n_classes"):
            if getattr(self, fld) < 1:
                raise ValueError(f"{fld} must be >= 1")

    @property
    def d_inner(self) -> int:
        return int(self.expand * self.d_model)

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def n_frames(self) -> int:
        """Frames of a one-second clip: 1 + 16000 / 160 = 101 (centre-padded STFT)."""
        return 1 + CLIP_SAMPLES // self.hop

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        if "ssm" in d and not isinstance(d["ssm"], SSMConstants):
            d["ssm"] = SSMConstants(**d["ssm"])
        if "class_names" in d:
            d["class_names"] = tuple(d["class_names"])
        return cls(**d)


# The published variants (model-math.md §0; Small from the checkpoint: d_model 24, 3 layers).
# Tiny-DualPCEN's own checkpoint stores constant Δ floor 0.15 and ε 0.1 and has no B-gate
# floor; the preset carries the code defaults, which is what a freshly trained model uses.
VARIANTS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(name="NanoMamba-Tiny", frontend="logmel", snr_mode="static",
                        d_model=16, d_state=4, n_layers=2),
    "small": ModelConfig(name="NanoMamba-Small", frontend="logmel", snr_mode="static",
                         d_model=24, d_state=4, n_layers=3),
    "tiny-dualpcen": ModelConfig(name="NanoMamba-Tiny-DualPCEN", frontend="dualpcen",
                                 snr_mode="ema", routing="sf+tilt",
                                 d_model=16, d_state=4, n_layers=2),
    "matched-dualpcen": ModelConfig(name="NanoMamba-Matched-DualPCEN", frontend="dualpcen",
                                    snr_mode="ema", routing="sf+tilt",
                                    d_model=21, d_state=5, n_layers=2),
}


def variant(name: str) -> ModelConfig:
    """The preset config for a variant name (case-insensitive, ``NanoMamba-`` prefix optional)."""
    key = name.lower().removeprefix("nanomamba-")
    if key not in VARIANTS:
        raise KeyError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[key]
