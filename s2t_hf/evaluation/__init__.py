"""Evaluation: manifests, metrics and the `drug_accuracy` evaluate module, prediction over a
manifest, summaries, `compare` with its Parquet cache, and the report's plots."""
