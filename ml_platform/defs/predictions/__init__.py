"""Predictions stage: each batch scored by the champion, in the batch's warehouse file."""
