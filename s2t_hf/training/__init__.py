"""Training: recipe arguments, model-ready datasets, the collator, the ranking trainers,
folder checks, and the end-of-run report."""
