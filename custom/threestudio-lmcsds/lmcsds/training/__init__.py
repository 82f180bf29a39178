"""Training the corrective: photos, triplets, trainer, report."""
