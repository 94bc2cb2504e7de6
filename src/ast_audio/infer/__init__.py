"""Applications of a loaded model: tagging, streamed window scores, events, calibration, explanations, plots."""
