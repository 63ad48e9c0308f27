"""Training stage: the train/test split and one model asset per configured algorithm."""
