"""Weights in and out: every checkpoint format (checkpoint.py: load_model, save_model, save_hf), the format readers
(formats.py), safe tensor reading (tensors.py), key maps and the one key/shape check (convert.py), weight surgery
(adapt.py) and Hugging Face Hub downloads (hub.py). Nothing is imported here, so the CLI can read `hub.DEFAULT_MODEL`
without torch."""
