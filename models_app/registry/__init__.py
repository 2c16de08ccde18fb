"""The model registry: agents, provider accounts, model versions and their lifecycle, API keys, and the
gateway through which Django code asks a model."""
