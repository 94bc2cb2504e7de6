"""The explanation methods by name (torch-free, so the command line can offer them without importing torch).

- "gradient-rollout" (the default): class-specific; explains one class, the top-scoring one unless a class is given
  (Chefer, Gur & Wolf, ICCV 2021).
- "rollout": class-agnostic attention rollout (Abnar & Zuidema, ACL 2020); the same map whichever class is asked
  about, so it takes no class.
"""

from __future__ import annotations

METHODS = ("gradient-rollout", "rollout")
DEFAULT_METHOD = METHODS[0]
CLASS_AGNOSTIC = ("rollout",)
