"""`ast_audio.hear`: the name HEAR's tooling imports (`--module ast_audio.hear`); the module lives in
`ast_audio.apps.hear`. Importing this name gives that module itself (one module object, not a copy)."""

from __future__ import annotations

import sys

from .apps import hear as _hear

sys.modules[__name__] = _hear
