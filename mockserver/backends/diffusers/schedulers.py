"""The API's scheduler names as diffusers schedulers.

| API name          | diffusers                                                          |
| ----------------- | ------------------------------------------------------------------ |
| euler             | EulerDiscreteScheduler                                             |
| euler_a           | EulerAncestralDiscreteScheduler                                    |
| dpm++2m           | DPMSolverMultistepScheduler (dpmsolver++)                          |
| dpm++2m_karras    | DPMSolverMultistepScheduler (dpmsolver++, Karras sigmas)           |
| dpm++sde          | DPMSolverMultistepScheduler (sde-dpmsolver++)                      |
| dpm++sde_karras   | DPMSolverMultistepScheduler (sde-dpmsolver++, Karras sigmas)       |
| lcm               | LCMScheduler, with the LCM-LoRA                                    |
| tcd               | TCDScheduler, with the LCM-LoRA                                    |

The SDE ones are DPM++ 2M SDE: its noise comes from the per-image generators, so each
image still depends only on its seed (diffusers' DPMSolverSDEScheduler draws from one
Brownian tree for the whole batch, and needs torchsde).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

DEFAULT_SCHEDULER = "dpm++2m_karras"


@dataclass(frozen=True, slots=True)
class SchedulerSpec:
    cls: str
    """A scheduler class of the ``diffusers`` package."""
    options: dict[str, Any] = field(default_factory=dict)
    few_step: bool = False
    """A distilled sampler: it runs with the LCM-LoRA, a few steps and low guidance."""


SCHEDULERS: dict[str, SchedulerSpec] = {
    "euler": SchedulerSpec("EulerDiscreteScheduler"),
    "euler_a": SchedulerSpec("EulerAncestralDiscreteScheduler"),
    "dpm++2m": SchedulerSpec("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpm++2m_karras": SchedulerSpec(
        "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}
    ),
    "dpm++sde": SchedulerSpec("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "dpm++sde_karras": SchedulerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
    ),
    "lcm": SchedulerSpec("LCMScheduler", few_step=True),
    "tcd": SchedulerSpec("TCDScheduler", few_step=True),
}


def make_scheduler(name: str, base_config: Any) -> Any:
    """A fresh scheduler ``name`` built from the checkpoint's scheduler config (the betas,
    the timestep spacing); keys its class does not take are left out rather than warned
    about on every prompt."""
    import diffusers

    spec = SCHEDULERS[name]
    cls = getattr(diffusers, spec.cls)
    accepted = inspect.signature(cls.__init__).parameters
    config = {key: value for key, value in dict(base_config).items() if key in accepted}
    return cls.from_config({**config, **spec.options})
