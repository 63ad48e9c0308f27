"""Evaluation stage: the report comparing candidates, and the champion in the Model Registry."""
