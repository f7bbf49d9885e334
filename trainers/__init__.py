"""Keras trainers: Saliency-Guided Training as a `Model.train_step` override."""
