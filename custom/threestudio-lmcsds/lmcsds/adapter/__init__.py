"""threestudio components; importing this module registers them (it imports threestudio)."""

from .guidance import LMCSDSDeepFloydGuidance

__all__ = ["LMCSDSDeepFloydGuidance"]
