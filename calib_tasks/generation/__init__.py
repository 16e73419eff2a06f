"""Calibration of generated answers: any ``generate_until`` task of the harness, wrapped by name
(``CalibGenerationTask``, in ``task``), its answers scored with the confidence methods of
``calib_tasks.scoring.confidence_methods`` through the ``calib_generate`` request type
(``request``; token log-probabilities taken from the generation itself: ``hf_steps``,
``completions_steps``, ``vllm_steps``) and the second prompts of ``prompts``.

Importing it installs ``calib_generate`` on the harness's ``LM``.
"""

from calib_tasks.generation import request
from calib_tasks.generation.task import CalibGenerationTask

request.install()

__all__ = ["CalibGenerationTask"]
