"""Fine-tuning: training files uploaded to a provider, jobs tracked until they register a model version."""
