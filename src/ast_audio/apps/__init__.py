"""Applications built on the library: the offline demo (`demo.py`: generated data, training through the engine,
`ast-audio demo` / `ast-audio scenes`) and the HEAR benchmark's module API (`hear.py`, also importable as
`ast_audio.hear`, the name HEAR's tooling is given)."""
