"""Learning-rate multipliers (``lr_multiplier`` in a config).

Both schedules are defined on the fraction of training done, so they follow
``train.max_iter`` when it is overridden on the command line: the warm-up is a fraction
of the run and the step milestones are at 88.9% and 96.3% of it (ViTDet's 100-epoch
milestones 163889 and 177546 of 184375 iterations).
"""
from fvcore.common.param_scheduler import CosineParamScheduler, MultiStepParamScheduler

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler

step = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01],
        milestones=[889, 963],
        num_updates=1000,
    ),
    warmup_length=0.01,
    warmup_method="linear",
    warmup_factor=0.001,
)

cosine = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.01),
    warmup_length=0.05,
    warmup_method="linear",
    warmup_factor=0.001,
)
