"""The contract kit: check servers and clients against openapi.yaml."""

__all__: list[str] = []
