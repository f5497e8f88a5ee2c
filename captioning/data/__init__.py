"""Datasets: records, readers, the synthetic shapes generator, the torch Dataset and the DataModule."""
