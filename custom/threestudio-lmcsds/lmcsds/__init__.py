"""threestudio-lmcsds: Score Distillation Sampling with Learned Manifold Corrective.

``lmcsds.core`` is threestudio-free (gradients, corrective network, checkpoints, prior);
``lmcsds.adapter`` registers the threestudio components and imports threestudio.
"""

__version__ = "0.1.0"
