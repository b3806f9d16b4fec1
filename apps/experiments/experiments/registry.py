"""Every study by name, in the issue's order."""

from __future__ import annotations

from experiments.bits_per_byte import BPB_STUDY
from experiments.efficiency import MEMORY_STUDY, SPEED_STUDY
from experiments.side import SIDE_STUDY
from experiments.spec import Study
from experiments.stability import DEPTH_STUDY, SCHEDULE_STUDY
from experiments.studies_grpo import GRPO_STUDY
from experiments.studies_moe import MOE_STUDY
from experiments.training_choices import OPTIMIZER_STUDY, POSITIONS_STUDY, PRECISION_STUDY

STUDIES: dict[str, Study] = {
    s.name: s
    for s in (
        POSITIONS_STUDY,
        DEPTH_STUDY,
        PRECISION_STUDY,
        OPTIMIZER_STUDY,
        SCHEDULE_STUDY,
        MEMORY_STUDY,
        BPB_STUDY,
        SPEED_STUDY,
        SIDE_STUDY,
        MOE_STUDY,
        GRPO_STUDY,
    )
}
